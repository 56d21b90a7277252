//! The endpoints the gateway forwards to, from its endpoints file: for each, its protocol, base
//! URL, the file its provider key is read from (a Secret mounted into the gateway only), its
//! model ids and their prices. Until the `ModelEndpoint` kind exists, the file stands in for it.
//!
//! ```yaml
//! endpoints:
//!   - name: openai
//!     api: openai
//!     baseURL: https://api.openai.com/v1
//!     keyFile: /var/run/secrets/crucible/openai/apiKey
//!     models: [gpt-4.1-mini]
//!     pricing: {gpt-4.1-mini: {inputPerMTok: 0.40, outputPerMTok: 1.60}}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::HeaderValue;
use serde::Deserialize;

use super::budget::Price;
use super::usage::Api;

/// Largest endpoints file and key file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why the endpoints could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The endpoints file is not valid.
    #[error("the endpoints file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An endpoint is unusable (its message names it; never the key).
    #[error("endpoint {endpoint}: {message}")]
    Endpoint {
        /// The endpoint's name.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    endpoints: Vec<Spec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    name: String,
    api: Api,
    #[serde(rename = "baseURL")]
    base_url: String,
    key_file: PathBuf,
    models: Vec<String>,
    #[serde(default)]
    pricing: BTreeMap<String, Price>,
}

/// One provider endpoint, key loaded.
pub struct Endpoint {
    /// Its name.
    pub name: String,
    /// Its protocol.
    pub api: Api,
    /// Base URL without a trailing `/` (ends in `/v1`).
    pub base_url: String,
    /// The header value carrying the key, marked sensitive so no debug output shows it.
    key: HeaderValue,
    pricing: BTreeMap<String, Price>,
}

impl Endpoint {
    /// The header that authenticates to the provider.
    pub fn key_header(&self) -> (&'static str, &HeaderValue) {
        match self.api {
            Api::Openai => ("authorization", &self.key),
            Api::Anthropic => ("x-api-key", &self.key),
        }
    }

    /// The price of `model` (free when the endpoint gives none).
    pub fn price(&self, model: &str) -> Price {
        self.pricing.get(model).copied().unwrap_or_default()
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("api", &self.api)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Endpoints by the model ids they serve.
#[derive(Debug, Default)]
pub struct Catalog(HashMap<String, Arc<Endpoint>>);

impl Catalog {
    /// Loads the endpoints file at `path` and the key files it names.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = read_bounded(path)?;
        let file: File = serde_saphyr::from_str(&text).map_err(|e| CatalogError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::build(file.endpoints, read_bounded)
    }

    fn build(
        specs: Vec<Spec>,
        read_key: impl Fn(&Path) -> Result<String, CatalogError>,
    ) -> Result<Self, CatalogError> {
        let mut by_model = HashMap::new();
        for spec in specs {
            let invalid = |message: &str| CatalogError::Endpoint {
                endpoint: spec.name.clone(),
                message: message.to_string(),
            };
            let base_url = spec.base_url.trim_end_matches('/').to_string();
            if !(base_url.starts_with("https://") || base_url.starts_with("http://"))
                || base_url.parse::<http::Uri>().is_err()
            {
                return Err(invalid("baseURL must be an http(s) URL"));
            }
            let key = read_key(&spec.key_file)?;
            let key = match spec.api {
                Api::Openai => format!("Bearer {}", key.trim()),
                Api::Anthropic => key.trim().to_string(),
            };
            let mut key = HeaderValue::try_from(key)
                .map_err(|_| invalid("the key file holds characters a header cannot carry"))?;
            key.set_sensitive(true);
            let endpoint = Arc::new(Endpoint {
                name: spec.name.clone(),
                api: spec.api,
                base_url,
                key,
                pricing: spec.pricing,
            });
            for model in spec.models {
                if by_model.insert(model.clone(), endpoint.clone()).is_some() {
                    return Err(invalid(&format!(
                        "model {model:?} is served by two endpoints"
                    )));
                }
            }
        }
        Ok(Self(by_model))
    }

    /// The endpoint serving `model`.
    pub fn get(&self, model: &str) -> Option<&Arc<Endpoint>> {
        self.0.get(model)
    }
}

fn read_bounded(path: &Path) -> Result<String, CatalogError> {
    use std::io::Read;
    let read = |source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(read)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(yaml: &str) -> Vec<Spec> {
        serde_saphyr::from_str::<File>(yaml)
            .expect("yaml")
            .endpoints
    }

    const TWO: &str = "endpoints:
  - {name: o, api: openai, baseURL: 'http://127.0.0.1:1/v1/', keyFile: /k, models: [a, b],
     pricing: {a: {inputPerMTok: 1, outputPerMTok: 2}}}
  - {name: c, api: anthropic, baseURL: 'https://example.com/v1', keyFile: /k, models: [c]}
";

    #[test]
    fn models_map_to_their_endpoint_with_its_key_header() {
        let catalog = Catalog::build(specs(TWO), |_| Ok("sk-1\n".into())).expect("valid");
        let openai = catalog.get("b").expect("b");
        assert_eq!(openai.base_url, "http://127.0.0.1:1/v1");
        assert_eq!(openai.key_header().1, "Bearer sk-1");
        assert_eq!(openai.price("a").output_per_m_tok, 2.0);
        let anthropic = catalog.get("c").expect("c");
        assert_eq!(
            anthropic.key_header(),
            ("x-api-key", &HeaderValue::from_static("sk-1"))
        );
        assert!(catalog.get("d").is_none());
        assert!(!format!("{anthropic:?}").contains("sk-1"));
    }

    #[test]
    fn a_model_on_two_endpoints_or_a_bad_url_is_refused() {
        let twice = TWO.replace("models: [c]", "models: [a]");
        let err = Catalog::build(specs(&twice), |_| Ok("k".into())).expect_err("duplicate");
        assert!(err.to_string().contains("two endpoints"), "{err}");
        let ftp = TWO.replace("https://example.com/v1", "ftp://example.com");
        assert!(Catalog::build(specs(&ftp), |_| Ok("k".into())).is_err());
    }
}
