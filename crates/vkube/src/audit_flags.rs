//! kube-apiserver's audit flags on `vkube serve`, also read from a vcluster.yaml's
//! `controlPlane.distro.k8s.apiServer.extraArgs` (flags given on the command line win).

use std::path::PathBuf;

use anyhow::{Result, bail};
use vkube_server::audit::{AuditOptions, LogOptions, Mode, Policy};

#[derive(clap::Args, Default)]
pub struct AuditArgs {
    /// An audit.k8s.io/v1 Policy file (YAML or JSON): which requests are logged, and how much
    /// of each (None, Metadata, Request, RequestResponse). Without it nothing is logged.
    #[arg(long)]
    audit_policy_file: Option<PathBuf>,
    /// Where this replica writes its audit events, one JSON line each; `-` for standard output.
    #[arg(long)]
    audit_log_path: Option<PathBuf>,
    /// Days to keep rotated audit logs (default 0: whatever their age).
    #[arg(long)]
    audit_log_maxage: Option<u64>,
    /// Rotated audit logs to keep (default 0: all).
    #[arg(long)]
    audit_log_maxbackup: Option<usize>,
    /// Megabytes before the audit log is rotated (default 0: 100).
    #[arg(long)]
    audit_log_maxsize: Option<u64>,
    /// `blocking` (default): requests wait when the writer falls 10000 events behind; `batch`:
    /// events are dropped then. `blocking-strict` reads as `blocking`.
    #[arg(long)]
    audit_log_mode: Option<String>,
    /// Only `json` (upstream's default) is written.
    #[arg(long)]
    audit_log_format: Option<String>,
}

const FLAGS: &[&str] = &[
    "--audit-policy-file",
    "--audit-log-path",
    "--audit-log-maxage",
    "--audit-log-maxbackup",
    "--audit-log-maxsize",
    "--audit-log-mode",
    "--audit-log-format",
];

impl AuditArgs {
    /// The audit options from these flags and the extraArgs, with the policy loaded (a bad one
    /// refuses startup); and the extraArgs that are not audit flags. `None` unless both a
    /// policy and a log path are given, as upstream records nothing without either.
    pub fn options(&self, extra_args: &[String]) -> Result<(Option<AuditOptions>, Vec<String>)> {
        let mut rest = Vec::new();
        let mut from_extra = std::collections::HashMap::new();
        for arg in extra_args {
            match arg.split_once('=') {
                Some((name, value)) if FLAGS.contains(&name) => {
                    from_extra.insert(name.to_string(), value.to_string());
                }
                _ => rest.push(arg.clone()),
            }
        }
        let text =
            |given: Option<String>, name: &str| given.or_else(|| from_extra.get(name).cloned());
        let number = |given: Option<u64>, name: &str| -> Result<u64> {
            match given {
                Some(n) => Ok(n),
                None => match from_extra.get(name) {
                    Some(v) => v.parse().map_err(|_| {
                        anyhow::anyhow!("extraArgs: {name}={v}: expected a number of at least 0")
                    }),
                    None => Ok(0),
                },
            }
        };
        let policy_file = text(
            self.audit_policy_file
                .as_ref()
                .map(|p| p.display().to_string()),
            "--audit-policy-file",
        );
        let log_path = text(
            self.audit_log_path
                .as_ref()
                .map(|p| p.display().to_string()),
            "--audit-log-path",
        );
        let mode: Mode = text(self.audit_log_mode.clone(), "--audit-log-mode")
            .unwrap_or_else(|| "blocking".into())
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        if let Some(format) = text(self.audit_log_format.clone(), "--audit-log-format")
            && format != "json"
        {
            bail!("--audit-log-format={format}: vkube writes the json format only");
        }
        let log = LogOptions {
            path: log_path.clone().map(PathBuf::from).unwrap_or_default(),
            max_age_days: number(self.audit_log_maxage, "--audit-log-maxage")?,
            max_backups: number(
                self.audit_log_maxbackup.map(|n| n as u64),
                "--audit-log-maxbackup",
            )? as usize,
            max_size_mb: number(self.audit_log_maxsize, "--audit-log-maxsize")?,
            mode,
        };
        let options = match (policy_file, log_path) {
            (Some(policy), Some(_)) => {
                let policy = Policy::load(std::path::Path::new(&policy))
                    .map_err(|e| anyhow::anyhow!("loading audit policy file: {e}"))?;
                Some(AuditOptions { policy, log })
            }
            (Some(_), None) => {
                eprintln!(
                    "vkube: warning: --audit-policy-file without --audit-log-path: no audit events are written"
                );
                None
            }
            (None, Some(_)) => {
                eprintln!(
                    "vkube: warning: no audit policy file provided (--audit-policy-file): no events will be recorded for the log backend"
                );
                None
            }
            (None, None) => None,
        };
        Ok((options, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "vkube-audit-flags-{}-{name}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn extra_args_are_read_and_flags_win() {
        let file = policy_file(
            "extra",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
        );
        let args = AuditArgs {
            audit_log_maxsize: Some(5),
            ..AuditArgs::default()
        };
        let extra: Vec<String> = vec![
            format!("--audit-policy-file={}", file.display()),
            "--audit-log-path=/var/log/audit.log".into(),
            "--audit-log-maxage=30".into(),
            "--audit-log-maxbackup=3".into(),
            "--audit-log-maxsize=50".into(),
            "--oidc-issuer-url=https://example.com".into(),
        ];
        let (options, rest) = args.options(&extra).unwrap();
        let log = options.unwrap().log;
        assert_eq!(log.path, PathBuf::from("/var/log/audit.log"));
        assert_eq!(
            (log.max_age_days, log.max_backups, log.max_size_mb),
            (30, 3, 5)
        );
        assert_eq!(log.mode, Mode::Blocking);
        assert_eq!(rest, ["--oidc-issuer-url=https://example.com"]);
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_bad_policy_refuses_startup_naming_the_file() {
        let file = policy_file(
            "bad",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n",
        );
        let args = AuditArgs {
            audit_policy_file: Some(file.clone()),
            audit_log_path: Some("-".into()),
            ..AuditArgs::default()
        };
        let err = args.options(&[]).err().unwrap().to_string();
        assert_eq!(
            err,
            format!(
                "loading audit policy file: rules[0].level: Unsupported value: \"Loud\": supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\": from file {}",
                file.display()
            )
        );
        std::fs::remove_file(file).unwrap();
        let neither = AuditArgs::default().options(&[]).unwrap();
        assert!(neither.0.is_none() && neither.1.is_empty());
        let bad_mode = AuditArgs::default().options(&["--audit-log-mode=async".into()]);
        assert!(bad_mode.is_err());
    }
}
