//! Git credentials from the Secret named in `spec.source.git.secretRef`. Pure.
//!
//! A Secret is used only when its owner opted in with the label
//! [`GIT_CREDENTIALS_LABEL`]` = "true"`: otherwise any Evaluation could name any Secret of its
//! namespace (a service-account token Secret has a `token` key) and have the controller send
//! it to a host of its choosing. Service-account token Secrets are refused even with the label.

use k8s_openapi::api::core::v1::Secret;

use crate::evaluation::plan::SourceProblem;
use crate::source::Credentials;

/// Label that marks a Secret as git credentials Crucible may send to the repository's host.
pub const GIT_CREDENTIALS_LABEL: &str = "crucible.dev/git-credentials";
/// Type of the Secrets holding service-account tokens, never sent anywhere.
const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// Status reason of a Secret Crucible will not use.
const REFUSED: &str = "SourceRefused";

/// The credentials in `secret` (named `name`): `token`; `username` + `password`; or
/// `ssh-privatekey` + `known_hosts` (+ `passphrase`).
///
/// # Errors
/// The Secret is not labelled for git, is a service-account token, or has none of the keys;
/// never transient (the user has to change the Secret).
pub fn from_secret(name: &str, secret: &Secret) -> Result<Credentials, SourceProblem> {
    let refuse = |reason, message| SourceProblem {
        reason,
        message,
        transient: false,
    };
    if secret.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN_TYPE) {
        return Err(refuse(
            REFUSED,
            format!(
                "Secret {name} (spec.source.git.secretRef) is a service-account token, which \
                 is never sent to a git server"
            ),
        ));
    }
    let opted_in = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(GIT_CREDENTIALS_LABEL))
        .is_some_and(|v| v == "true");
    if !opted_in {
        return Err(refuse(
            REFUSED,
            format!(
                "Secret {name} (spec.source.git.secretRef) lacks the label \
                 {GIT_CREDENTIALS_LABEL}: \"true\"; add it to allow sending it to the \
                 repository's host"
            ),
        ));
    }
    let data = secret.data.as_ref();
    let text = |key: &str| {
        data.and_then(|d| d.get(key)).map(|b| {
            String::from_utf8_lossy(&b.0)
                .trim_end_matches('\n')
                .to_string()
        })
    };
    if let Some(key) = text("ssh-privatekey") {
        return Ok(Credentials::Ssh {
            private_key: key,
            known_hosts: text("known_hosts"),
            passphrase: text("passphrase"),
        });
    }
    if let Some(token) = text("token") {
        return Ok(Credentials::Token(token));
    }
    match (text("username"), text("password")) {
        (Some(username), Some(password)) => Ok(Credentials::Basic { username, password }),
        _ => Err(refuse(
            "InvalidSourceCredentials",
            format!("Secret {name} has none of: token; username and password; ssh-privatekey"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(labels: &[(&str, &str)], type_: Option<&str>, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret {
            type_: type_.map(Into::into),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        s
    }

    const OPT_IN: (&str, &str) = (GIT_CREDENTIALS_LABEL, "true");

    #[test]
    fn an_unlabelled_secret_is_refused_naming_the_label() {
        for labels in [&[][..], &[(GIT_CREDENTIALS_LABEL, "yes")][..]] {
            let err = from_secret("tok", &secret(labels, None, &[("token", "t")]))
                .expect_err("not opted in");
            assert_eq!(err.reason, "SourceRefused");
            assert!(!err.transient);
            assert!(
                err.message
                    .contains("crucible.dev/git-credentials: \"true\""),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn service_account_tokens_are_refused_even_when_labelled() {
        let sa = secret(
            &[OPT_IN],
            Some("kubernetes.io/service-account-token"),
            &[("token", "eyJ...")],
        );
        let err = from_secret("default-token-x", &sa).expect_err("service account");
        assert_eq!(err.reason, "SourceRefused");
        assert!(
            err.message.contains("service-account token"),
            "{}",
            err.message
        );
    }

    #[test]
    fn labelled_secrets_give_their_credentials() {
        let token = from_secret("t", &secret(&[OPT_IN], None, &[("token", "abc\n")]));
        assert_eq!(token.expect("token"), Credentials::Token("abc".into()));
        let basic = from_secret(
            "b",
            &secret(&[OPT_IN], None, &[("username", "u"), ("password", "p")]),
        );
        assert_eq!(
            basic.expect("basic"),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        let ssh = from_secret(
            "s",
            &secret(
                &[OPT_IN],
                Some("kubernetes.io/ssh-auth"),
                &[("ssh-privatekey", "KEY"), ("known_hosts", "h k v")],
            ),
        );
        assert!(matches!(
            ssh.expect("ssh"),
            Credentials::Ssh {
                known_hosts: Some(_),
                passphrase: None,
                ..
            }
        ));
        let empty = from_secret("e", &secret(&[OPT_IN], None, &[])).expect_err("no keys");
        assert_eq!(empty.reason, "InvalidSourceCredentials");
    }
}
