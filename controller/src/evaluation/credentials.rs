//! Git credentials from the Secret named in `spec.source.git.secretRef`. Pure.
//!
//! A Secret is used only when its owner opted in with the label
//! [`GIT_CREDENTIALS_LABEL`]` = "true"`: otherwise any Evaluation could name any Secret of its
//! namespace (a service-account token Secret has a `token` key) and have the controller send
//! it to a host of its choosing. Service-account token Secrets are refused even with the label.
//! A labelled Secret goes only to the repositories its owner named in its annotation
//! [`GIT_URL_PREFIXES_ANNOTATION`] (URL prefixes, as Argo CD's repository credentials): a
//! token for one server is never sent to another an Evaluation names.

use k8s_openapi::api::core::v1::Secret;

use crate::crd::bounds::shown;
use crate::run::fetched::SourceProblem;
use crate::source::Credentials;
use crate::source::url::RemoteUrl;

/// Label that marks a Secret as git credentials Crucible may send to the repository's host.
pub const GIT_CREDENTIALS_LABEL: &str = "crucible.dev/git-credentials";
/// Annotation of a git credentials Secret: the URL prefixes (comma-separated) of the
/// repositories it may be sent to.
pub const GIT_URL_PREFIXES_ANNOTATION: &str = "crucible.dev/git-url-prefixes";
/// Type of the Secrets holding service-account tokens, never sent anywhere.
const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// Status reason of a Secret Crucible will not use.
const REFUSED: &str = "SourceRefused";

/// The credentials in `secret` (named `name`) for the repository at `url`: `token`;
/// `username` + `password`; or `ssh-privatekey` + `known_hosts` (+ `passphrase`).
///
/// # Errors
/// The Secret is not labelled for git, is a service-account token, is not bound to `url`, or
/// has none of the keys; never transient (the user has to change the Secret).
pub fn from_secret(name: &str, secret: &Secret, url: &str) -> Result<Credentials, SourceProblem> {
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
    bound_to(name, secret, url)?;
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

/// Whether `secret`'s [`GIT_URL_PREFIXES_ANNOTATION`] covers `url`.
fn bound_to(name: &str, secret: &Secret, url: &str) -> Result<(), SourceProblem> {
    let refuse = |reason, message| SourceProblem {
        reason,
        message,
        transient: false,
    };
    let Some(prefixes) = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GIT_URL_PREFIXES_ANNOTATION))
    else {
        return Err(refuse(
            REFUSED,
            format!(
                "Secret {name} (spec.source.git.secretRef) names no repository it is for: \
                 annotate it with {GIT_URL_PREFIXES_ANNOTATION}, the URL prefixes it may be \
                 sent to, comma-separated (for example https://github.com/my-org/)"
            ),
        ));
    };
    let repo = RemoteUrl::parse(url).map_err(|e| {
        refuse(
            "InvalidSourceUrl",
            format!("spec.source.git.url is not a git URL: {e}"),
        )
    })?;
    for raw in prefixes.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let prefix = RemoteUrl::parse_prefix(raw).map_err(|e| {
            refuse(
                "InvalidSourceCredentials",
                format!(
                    "Secret {name}: {GIT_URL_PREFIXES_ANNOTATION} holds {}, not a URL prefix: {e}",
                    shown(raw)
                ),
            )
        })?;
        if prefix.covers(&repo) {
            return Ok(());
        }
    }
    Err(refuse(
        REFUSED,
        format!(
            "Secret {name} (spec.source.git.secretRef) is not for {url}: its \
             {GIT_URL_PREFIXES_ANNOTATION} is {}; add a prefix of this URL to send it there",
            shown(prefixes)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    const REPO: &str = "https://github.com/org/evals.git";

    /// A Secret bound to `https://github.com/org/`.
    fn secret(labels: &[(&str, &str)], type_: Option<&str>, data: &[(&str, &str)]) -> Secret {
        bound(labels, type_, data, Some("https://github.com/org/"))
    }

    fn bound(
        labels: &[(&str, &str)],
        type_: Option<&str>,
        data: &[(&str, &str)],
        prefixes: Option<&str>,
    ) -> Secret {
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
        s.metadata.annotations = prefixes
            .map(|p| BTreeMap::from([(GIT_URL_PREFIXES_ANNOTATION.to_string(), p.to_string())]));
        s
    }

    const OPT_IN: (&str, &str) = (GIT_CREDENTIALS_LABEL, "true");

    #[test]
    fn an_unlabelled_secret_is_refused_naming_the_label() {
        for labels in [&[][..], &[(GIT_CREDENTIALS_LABEL, "yes")][..]] {
            let err = from_secret("tok", &secret(labels, None, &[("token", "t")]), REPO)
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
        let err = from_secret("default-token-x", &sa, REPO).expect_err("service account");
        assert_eq!(err.reason, "SourceRefused");
        assert!(
            err.message.contains("service-account token"),
            "{}",
            err.message
        );
    }

    #[test]
    fn labelled_secrets_give_their_credentials() {
        let token = from_secret("t", &secret(&[OPT_IN], None, &[("token", "abc\n")]), REPO);
        assert_eq!(token.expect("token"), Credentials::Token("abc".into()));
        let basic = from_secret(
            "b",
            &secret(&[OPT_IN], None, &[("username", "u"), ("password", "p")]),
            REPO,
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
            REPO,
        );
        assert!(matches!(
            ssh.expect("ssh"),
            Credentials::Ssh {
                known_hosts: Some(_),
                passphrase: None,
                ..
            }
        ));
        let empty = from_secret("e", &secret(&[OPT_IN], None, &[]), REPO).expect_err("no keys");
        assert_eq!(empty.reason, "InvalidSourceCredentials");
    }

    #[test]
    fn a_secret_goes_only_to_the_repositories_it_is_bound_to() {
        let token = &[("token", "t")][..];
        // Labelled but bound to nothing: refused, naming the annotation.
        let unbound = bound(&[OPT_IN], None, token, None);
        let err = from_secret("tok", &unbound, REPO).expect_err("unbound");
        assert_eq!((err.reason, err.transient), ("SourceRefused", false));
        assert!(
            err.message.contains(GIT_URL_PREFIXES_ANNOTATION),
            "{}",
            err.message
        );
        // Bound elsewhere: refused, naming the URL and the prefixes.
        let org = bound(
            &[OPT_IN],
            None,
            token,
            Some("https://gitlab.example/org, https://github.com/org/evals"),
        );
        for url in [
            "https://evil.example/org/evals.git",
            "https://github.com.evil.example/org/evals.git",
            "https://github.com/org/evals-other",
            "https://github.com/other/evals",
        ] {
            let err = from_secret("tok", &org, url).expect_err(url);
            assert_eq!(err.reason, "SourceRefused", "{url}");
            assert!(
                err.message.contains(url) && err.message.contains("gitlab.example/org"),
                "{}",
                err.message
            );
        }
        // Covered by one of its prefixes: sent.
        for url in [
            "https://github.com/org/evals",
            "https://github.com/org/evals/sub",
            "https://gitlab.example/org/x",
        ] {
            assert_eq!(
                from_secret("tok", &org, url).expect(url),
                Credentials::Token("t".into())
            );
        }
        // A prefix that is not a URL is the Secret's problem, said so.
        let bad = bound(&[OPT_IN], None, token, Some("github.com/org"));
        let err = from_secret("tok", &bad, REPO).expect_err("bad prefix");
        assert_eq!(err.reason, "InvalidSourceCredentials");
        assert!(
            err.message.contains("\"github.com/org\""),
            "{}",
            err.message
        );
    }
}
