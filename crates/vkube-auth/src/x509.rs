//! Client certificates: rustls has already verified the chain against the cluster CA; here the
//! subject becomes the user — CN the name, each O a group — as upstream's x509 authenticator.

use crate::UserInfo;

/// The user a verified client certificate (DER) names; `None` when it has no CN.
pub fn user_of(der: &[u8]) -> Option<UserInfo> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = parsed.subject();
    let username = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(
        UserInfo {
            username,
            groups,
            ..UserInfo::default()
        }
        .authenticated(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cn_is_the_user_and_each_o_a_group() {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "jane");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "dev");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = user_of(cert.der()).unwrap();
        assert_eq!(user.username, "jane");
        assert_eq!(user.groups, ["dev", "system:authenticated"]);
    }
}
