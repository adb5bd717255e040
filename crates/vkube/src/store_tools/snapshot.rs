//! The snapshot file: `VKUBE-SNAPSHOT\n`, then a gzip stream holding a JSON header (the vkube
//! version, the source, its revision, the vcluster.yaml when given) and one record per key
//! (key, mod_revision, value), then a 48-byte trailer: `VKSNAPv1`, the length of everything
//! before the trailer, and its SHA-256. A restore checks the trailer over the whole file before
//! it opens the store, so a truncated or damaged file writes nothing.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vkube_store::{KeyValue, ListOptions, Revision, Store};

use super::carried;

const MAGIC: &[u8] = b"VKUBE-SNAPSHOT\n";
const TRAILER_MAGIC: &[u8; 8] = b"VKSNAPv1";
const TRAILER: usize = 8 + 8 + 32;
const FORMAT: u32 = 1;
/// The largest key and value a record may claim (etcd's request limit is far below this).
const MAX_KEY: usize = 64 << 10;
const MAX_VALUE: usize = 512 << 20;
const PAGE: usize = 1000;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub format: u32,
    pub vkube_version: String,
    /// RFC 3339.
    pub created: String,
    /// The store it was taken from (no password).
    pub source: String,
    pub revision: Revision,
    /// The vcluster.yaml given with `--config`.
    pub config: Option<String>,
}

/// A written snapshot.
pub struct Made {
    pub keys: usize,
    pub bytes: usize,
    pub revision: Revision,
    pub file_bytes: u64,
    pub sha256: String,
}

/// A checked snapshot, its keys in file (key) order.
pub struct Loaded {
    pub header: Header,
    pub entries: Vec<KeyValue>,
    pub sha256: String,
}

/// Hashes and counts what passes through to the file.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `store`'s keyspace at its current revision into `path`, page by page: written to
/// `PATH.partial` and renamed when complete, so `path` is never a partial snapshot.
pub async fn create(
    store: &dyn Store,
    path: &Path,
    source: &str,
    config: Option<String>,
) -> Result<Made> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let (made, out) = write(store, BufWriter::new(file), source, config).await?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
    Ok(made)
}

/// Streams the snapshot to standard output (for `vkube snapshot create -`, which the host CLI
/// runs in a replica's pod and reads through an exec stream).
pub async fn create_to_stdout(
    store: &dyn Store,
    source: &str,
    config: Option<String>,
) -> Result<Made> {
    let (made, mut out) = write(
        store,
        BufWriter::new(std::io::stdout().lock()),
        source,
        config,
    )
    .await?;
    out.flush()?;
    Ok(made)
}

/// Writes the whole snapshot into `out`: magic, gzip body, trailer.
async fn write<W: Write>(
    store: &dyn Store,
    out: W,
    source: &str,
    config: Option<String>,
) -> Result<(Made, W)> {
    let mut hashing = Hashing {
        inner: out,
        hash: Sha256::new(),
        len: 0,
    };
    hashing.write_all(MAGIC)?;
    let mut gz = GzEncoder::new(hashing, Compression::fast());
    let mut options = ListOptions {
        revision: None,
        limit: Some(PAGE),
        start_after: None,
    };
    let (mut keys, mut bytes) = (0, 0);
    let revision = loop {
        let page = store
            .list("/", options.clone())
            .await
            .context("reading the store")?;
        if options.revision.is_none() {
            let header = Header {
                format: FORMAT,
                vkube_version: env!("CARGO_PKG_VERSION").to_string(),
                created: time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)?,
                source: source.to_string(),
                revision: page.revision,
                config: config.clone(),
            };
            let json = serde_json::to_vec(&header)?;
            gz.write_all(&(json.len() as u32).to_be_bytes())?;
            gz.write_all(&json)?;
        }
        options.revision = Some(page.revision);
        options.start_after = page.items.last().map(|kv| kv.key.clone());
        for kv in page.items.iter().filter(|kv| carried(&kv.key)) {
            gz.write_all(&[1])?;
            gz.write_all(&(kv.key.len() as u32).to_be_bytes())?;
            gz.write_all(kv.key.as_bytes())?;
            gz.write_all(&kv.mod_revision.to_be_bytes())?;
            gz.write_all(&(kv.value.len() as u32).to_be_bytes())?;
            gz.write_all(&kv.value)?;
            keys += 1;
            bytes += kv.value.len();
        }
        if !page.more {
            break page.revision;
        }
    };
    gz.write_all(&[0])?;
    gz.write_all(&(keys as u64).to_be_bytes())?;
    let Hashing {
        mut inner,
        hash,
        len,
    } = gz.finish()?;
    let digest = hash.finalize();
    inner.write_all(TRAILER_MAGIC)?;
    inner.write_all(&len.to_be_bytes())?;
    inner.write_all(&digest)?;
    let made = Made {
        keys,
        bytes,
        revision,
        file_bytes: len + TRAILER as u64,
        sha256: hex(&digest),
    };
    Ok((made, inner))
}

/// Reads a snapshot from `path`, or from standard input when it is `-` (held in memory: a
/// restore holds every entry in memory anyway), and checks it with [`load_from`].
pub fn load(path: &Path) -> Result<Loaded> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("reading the snapshot from standard input")?;
        let size = bytes.len() as u64;
        return load_from(
            std::io::Cursor::new(bytes),
            size,
            "the snapshot on standard input",
        );
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    load_from(file, size, &path.display().to_string())
}

/// Checks the whole snapshot (`size` bytes) against its trailer, then reads it. Any damage is
/// an error naming it, before anything is written anywhere.
pub fn load_from<R: Read + Seek>(mut file: R, size: u64, shown: &str) -> Result<Loaded> {
    let damaged = |why: String| {
        anyhow::anyhow!("{shown} is not a whole vkube snapshot: {why}; nothing was written")
    };
    if size < (MAGIC.len() + TRAILER) as u64 {
        return Err(damaged(format!(
            "it is {size} bytes long, shorter than any snapshot"
        )));
    }
    let mut trailer = [0u8; TRAILER];
    file.seek(SeekFrom::End(-(TRAILER as i64)))?;
    file.read_exact(&mut trailer)?;
    if &trailer[..8] != TRAILER_MAGIC {
        return Err(damaged(
            "its end is not a snapshot trailer (truncated?)".into(),
        ));
    }
    let body = u64::from_be_bytes(trailer[8..16].try_into().expect("8 bytes"));
    if body != size - TRAILER as u64 {
        return Err(damaged(format!(
            "its trailer says {} bytes precede it, the file has {}",
            body,
            size - TRAILER as u64
        )));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut hash = Sha256::new();
    std::io::copy(&mut (&mut file).take(body), &mut HashSink(&mut hash))?;
    let digest = hash.finalize();
    if digest.as_slice() != &trailer[16..] {
        return Err(damaged(format!(
            "its SHA-256 is {}, the trailer says {} (corrupted)",
            hex(&digest),
            hex(&trailer[16..])
        )));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(file.take(body));
    let mut magic = vec![0u8; MAGIC.len()];
    reader.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(damaged("it does not start with VKUBE-SNAPSHOT".into()));
    }
    let (header, entries) =
        decode(GzDecoder::new(reader)).map_err(|e| damaged(format!("{e:#}")))?;
    Ok(Loaded {
        header,
        entries,
        sha256: hex(&digest),
    })
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_len(r: &mut impl Read, max: usize, what: &str) -> Result<usize> {
    let mut n = [0u8; 4];
    r.read_exact(&mut n)?;
    let n = u32::from_be_bytes(n) as usize;
    if n > max {
        bail!("a {what} of {n} bytes, more than {max}");
    }
    Ok(n)
}

fn read_bytes(r: &mut impl Read, n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn decode(mut r: impl Read) -> Result<(Header, Vec<KeyValue>)> {
    let n = read_len(&mut r, MAX_VALUE, "header")?;
    let header: Header = serde_json::from_slice(&read_bytes(&mut r, n)?).context("the header")?;
    if header.format != FORMAT {
        bail!(
            "format {} (from vkube {}); this vkube reads format {FORMAT}",
            header.format,
            header.vkube_version
        );
    }
    let mut entries = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)?;
        match tag[0] {
            0 => break,
            1 => {}
            t => bail!("an unknown record tag {t}"),
        }
        let n = read_len(&mut r, MAX_KEY, "key")?;
        let key = String::from_utf8(read_bytes(&mut r, n)?).context("a key")?;
        let mut rev = [0u8; 8];
        r.read_exact(&mut rev)?;
        let mod_revision = i64::from_be_bytes(rev);
        let n = read_len(&mut r, MAX_VALUE, "value")?;
        entries.push(KeyValue {
            key,
            value: read_bytes(&mut r, n)?,
            create_revision: mod_revision,
            mod_revision,
            version: 1,
        });
    }
    let mut count = [0u8; 8];
    r.read_exact(&mut count)?;
    let count = u64::from_be_bytes(count);
    if count != entries.len() as u64 {
        bail!("it holds {} keys, its end says {count}", entries.len());
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vkube_store::MemoryStore;

    async fn snapshot_of_three() -> (tempfile::TempDir, std::path::PathBuf) {
        let store = MemoryStore::new();
        for (k, v) in [
            ("/registry/a", "1"),
            ("/vkube/identity/ca", "sealed"),
            ("/registry/b", "2"),
        ] {
            store.create(k, v.as_bytes().to_vec(), None).await.unwrap();
        }
        store
            .create("/registry/vkubereplicas/vkube-0", b"{}".to_vec(), None)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let made = create(
            store.as_ref(),
            &path,
            "memory://",
            Some("controlPlane: {}\n".into()),
        )
        .await
        .unwrap();
        assert_eq!((made.keys, made.revision), (3, 4));
        (dir, path)
    }

    #[tokio::test]
    async fn a_snapshot_reads_back_with_its_header() {
        let (_dir, path) = snapshot_of_three().await;
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.header.revision, 4);
        assert_eq!(loaded.header.config.as_deref(), Some("controlPlane: {}\n"));
        let keys: Vec<_> = loaded
            .entries
            .iter()
            .map(|kv| (kv.key.as_str(), kv.mod_revision))
            .collect();
        assert_eq!(
            keys,
            [
                ("/registry/a", 1),
                ("/registry/b", 3),
                ("/vkube/identity/ca", 2)
            ]
        );
    }

    #[tokio::test]
    async fn any_flipped_byte_or_a_cut_is_refused() {
        let (_dir, path) = snapshot_of_three().await;
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            let err = load(&path)
                .err()
                .unwrap_or_else(|| panic!("byte {at} flipped was read"));
            assert!(
                err.to_string().contains("not a whole vkube snapshot"),
                "{err}"
            );
        }
        for len in [0, 10, good.len() / 2, good.len() - 1] {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(load(&path).is_err(), "cut at {len} was read");
        }
    }

    /// Written to all along, the store still gives a snapshot of exactly one revision: every
    /// key as it was then, none written after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_under_writes_is_one_revision() {
        let store = MemoryStore::new();
        for i in 0..5000 {
            let key = format!("/registry/configmaps/ns/c{i:05}");
            store.create(&key, b"0".to_vec(), None).await.unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = tokio::spawn({
            let (store, stop) = (store.clone(), stop.clone());
            async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("/registry/configmaps/ns/c{:05}", n % 5000);
                    let kv = store.get(&key, None).await.unwrap().unwrap();
                    let value = (n + 1).to_string().into_bytes();
                    store
                        .update(&key, value, kv.mod_revision, None)
                        .await
                        .unwrap();
                    n += 1;
                    tokio::task::yield_now().await;
                }
                n
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        create(store.as_ref(), &path, "memory://", None)
            .await
            .unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = writer.await.unwrap();
        let loaded = load(&path).unwrap();
        let then = store
            .list(
                "/",
                ListOptions {
                    revision: Some(loaded.header.revision),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(
            store.current_revision().await.unwrap() > loaded.header.revision,
            "{writes} writes"
        );
        let got: Vec<_> = loaded
            .entries
            .iter()
            .map(|kv| (&kv.key, &kv.value, kv.mod_revision))
            .collect();
        let want: Vec<_> = then
            .items
            .iter()
            .map(|kv| (&kv.key, &kv.value, kv.mod_revision))
            .collect();
        assert_eq!(got, want);
    }
}
