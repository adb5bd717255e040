//! The protobuf wire format, read field by field. Kubernetes' messages are proto2 with no groups,
//! so four wire types cover everything; anything else is malformed input, never a panic.

use super::ProtobufError;

/// One field as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterates the `(field number, value)` pairs of one encoded message.
pub struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Fields { data }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.data.split_first() else {
                return Err(ProtobufError::Truncated);
            };
            self.data = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed("a varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if self.data.len() < n {
            return Err(ProtobufError::Truncated);
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), ProtobufError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        Some((|| {
            let key = self.varint()?;
            let number = u32::try_from(key >> 3)
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ProtobufError::Malformed("an invalid field number"))?;
            let value = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => Value::Fixed64(u64::from_le_bytes(
                    self.take(8)?.try_into().expect("8 bytes"),
                )),
                2 => {
                    let len = usize::try_from(self.varint()?)
                        .map_err(|_| ProtobufError::Malformed("a length over the address space"))?;
                    Value::Bytes(self.take(len)?)
                }
                5 => Value::Fixed32(u32::from_le_bytes(
                    self.take(4)?.try_into().expect("4 bytes"),
                )),
                _ => return Err(ProtobufError::Malformed("an unsupported wire type")),
            };
            Ok((number, value))
        })())
    }
}

/// The varints of a field: one unpacked value, or a packed run of them.
pub fn varints(value: Value<'_>) -> Result<Vec<u64>, ProtobufError> {
    match value {
        Value::Varint(v) => Ok(vec![v]),
        Value::Bytes(b) => {
            let mut packed = Fields { data: b };
            let mut out = Vec::new();
            while !packed.data.is_empty() {
                out.push(packed.varint()?);
            }
            Ok(out)
        }
        _ => Err(ProtobufError::Malformed(
            "a fixed-width value where a varint belongs",
        )),
    }
}

#[cfg(test)]
pub mod encode {
    //! A tiny encoder for tests: builds the bodies a Go client would send.

    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn int(out: &mut Vec<u8>, field: u32, v: i64) {
        varint(out, u64::from(field) << 3);
        varint(out, v as u64);
    }

    pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        varint(out, (u64::from(field) << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    pub fn string(out: &mut Vec<u8>, field: u32, s: &str) {
        bytes(out, field, s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_wire_type_and_refuses_garbage() {
        let mut b = Vec::new();
        encode::int(&mut b, 1, -5);
        encode::string(&mut b, 2, "hi");
        b.extend_from_slice(&[(3 << 3) | 1, 1, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&[(4 << 3) | 5, 2, 0, 0, 0]);
        let fields: Vec<_> = Fields::new(&b).collect::<Result<_, _>>().unwrap();
        assert_eq!(fields[0], (1, Value::Varint(-5i64 as u64)));
        assert_eq!(fields[1], (2, Value::Bytes(b"hi")));
        assert_eq!(fields[2], (3, Value::Fixed64(1)));
        assert_eq!(fields[3], (4, Value::Fixed32(2)));

        for bad in [
            &[0x0a, 0x05, b'a'][..],
            &[0xff; 11][..],
            &[0x0b][..],
            &[0x00, 0x01][..],
        ] {
            assert!(
                Fields::new(bad).collect::<Result<Vec<_>, _>>().is_err(),
                "{bad:?}"
            );
        }
        let mut packed = Vec::new();
        encode::varint(&mut packed, 3);
        encode::varint(&mut packed, 300);
        assert_eq!(varints(Value::Bytes(&packed)).unwrap(), vec![3, 300]);
    }
}
