//! `storage_options` → an `object_store` store for s3, gs, az/abfs and http(s) URLs.
//!
//! Keys are `object_store`'s configuration keys (`endpoint`, `region`, `access_key_id`,
//! `secret_access_key`, `skip_signature`, `allow_http`, `timeout`, ...), plus a few
//! fsspec spellings (`anon`, `key`, `secret`, `token`, `endpoint_url`, `client_kwargs`
//! is not) and fastzarr's retry keys (`max_retries`, `retry_timeout`,
//! `retry_init_backoff`). Credentials also come from the environment, as `object_store`
//! reads them (`AWS_*`, `GOOGLE_*`, `AZURE_*`). An unknown key is an error that names
//! the key, never its value.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpService, ReqwestConnector,
};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use crate::errors::{Error, Result};
use crate::store::StorageOptions;

/// A remote store, the path of the Zarr store inside it, and the secret option values.
pub struct Remote {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
    pub secrets: Vec<String>,
}

/// The key of a URL's in-flight limit: scheme, host and port (for s3, gs and az URLs the
/// bucket or container, which is what those services throttle by).
fn host_key(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// `object_store`'s HTTP client, under the host's in-flight limit: every HTTP request, retries
/// included, waits for a place under it, and "slow down" answers (429, 503) and timeouts lower
/// it. `object_store` retries those requests itself; they queue for a place like the others.
#[derive(Debug)]
struct Watched {
    host: String,
}

impl HttpConnector for Watched {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(WatchedService {
            inner,
            host: self.host.clone(),
        }))
    }
}

#[derive(Debug)]
struct WatchedService {
    inner: HttpClient,
    host: String,
}

#[async_trait::async_trait]
impl HttpService for WatchedService {
    async fn call(&self, request: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let Ok(limit) = crate::runtime::host_limit(&self.host) else {
            return self.inner.execute(request).await;
        };
        // Held until the response's head arrives; the body's download is bounded by the
        // process-wide permits of `Store` reads.
        let slot = limit.acquire(crate::runtime::io_concurrency()).await;
        let answer = self.inner.execute(request).await;
        match &answer {
            Ok(response) if matches!(response.status().as_u16(), 429 | 503) => slot.refused(),
            Err(error) if error.kind() == HttpErrorKind::Timeout => slot.timed_out(),
            _ => drop(slot),
        }
        answer
    }
}

/// Keys whose values are secrets: they are scrubbed from every message.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "secret",
        "token",
        "password",
        "sas",
        "credential",
        "access_key",
        "key",
    ]
    .iter()
    .any(|word| key.contains(word))
        && !matches!(key.as_str(), "key_id")
}

/// The URL with user info and query values (where tokens hide) blanked out.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // A fragment can carry a token too (OAuth's implicit flow): it is dropped.
    let rest = rest.split_once('#').map_or(rest, |(rest, _)| rest);
    let (rest, query) = match rest.split_once('?') {
        Some((rest, _)) => (rest, "?***"),
        None => (rest, ""),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let slash = if rest.contains('/') { "/" } else { "" };
    format!("{scheme}://{authority}{slash}{path}{query}")
}

/// A duration option: a number of seconds, or `object_store`'s spelling ("30s", "500ms").
fn duration_text(value: &str) -> String {
    match value.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            format!("{}ms", (seconds * 1000.0).round() as u64)
        }
        _ => value.to_string(),
    }
}

fn seconds(key: &str, value: &str) -> Result<Duration> {
    value
        .trim()
        .trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "storage option '{key}' must be a number of seconds"
            ))
        })
}

/// Options split into retry settings and `object_store` configuration pairs.
struct Parsed {
    retry: RetryConfig,
    pairs: Vec<(String, String)>,
}

fn parse_options(scheme: &str, options: &StorageOptions) -> Result<Parsed> {
    let mut retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_mins(1),
    };
    let mut pairs = Vec::new();
    let mut endpoint_is_http = false;
    for (key, value) in options {
        let lower = key.to_ascii_lowercase();
        let truthy = || matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes");
        match lower.as_str() {
            "max_retries" => {
                retry.max_retries = value.trim().parse().map_err(|_| {
                    Error::InvalidArgument("storage option 'max_retries' must be an integer".into())
                })?;
            }
            "retry_timeout" => retry.retry_timeout = seconds(key, value)?,
            "retry_init_backoff" => retry.backoff.init_backoff = seconds(key, value)?,
            "anon" | "anonymous" => {
                if truthy() {
                    pairs.push(("skip_signature".into(), "true".into()));
                }
            }
            "timeout" | "connect_timeout" | "read_timeout" | "pool_idle_timeout" => {
                pairs.push((lower.clone(), duration_text(value)));
            }
            "endpoint" | "endpoint_url" | "aws_endpoint" | "aws_endpoint_url" => {
                endpoint_is_http = value.starts_with("http://");
                // GCS calls its endpoint the base URL (and allows plain HTTP to it).
                let key = if scheme == "gs" {
                    "base_url"
                } else {
                    "endpoint"
                };
                pairs.push((key.into(), value.clone()));
            }
            "key" if scheme == "s3" => pairs.push(("access_key_id".into(), value.clone())),
            "secret" if scheme == "s3" => {
                pairs.push(("secret_access_key".into(), value.clone()));
            }
            "token" if scheme == "s3" => pairs.push(("token".into(), value.clone())),
            _ => pairs.push((lower, value.clone())),
        }
    }
    // An explicit http:// endpoint (a local S3-compatible server) is consent to plain HTTP.
    if endpoint_is_http && scheme != "gs" && !pairs.iter().any(|(k, _)| k.ends_with("allow_http")) {
        pairs.push(("allow_http".into(), "true".into()));
    }
    Ok(Parsed { retry, pairs })
}

fn unknown_key(scheme: &str, key: &str) -> Error {
    Error::InvalidArgument(format!(
        "unknown storage option '{key}' for {scheme}:// URLs (object_store configuration keys are accepted)"
    ))
}

/// `message` with every option value of three characters or more blanked out, longest first
/// (so that a value containing another is blanked whole).
fn without_values(message: &str, options: &StorageOptions) -> String {
    let mut values: Vec<&String> = options.values().filter(|v| v.len() >= 3).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.into_iter().fold(message.to_string(), |text, value| {
        text.replace(value.as_str(), "***")
    })
}

/// The values among `options` that are secrets.
fn option_secrets(options: &StorageOptions) -> Vec<String> {
    let mut secrets: Vec<String> = options
        .iter()
        .filter(|(k, v)| is_secret_key(k) && v.len() >= 4)
        .map(|(_, v)| v.clone())
        .collect();
    // An endpoint (or any URL-valued option) may carry credentials like the store URL does.
    for value in options.values().filter(|v| v.contains("://")) {
        secrets.extend(crate::store::url_secrets(value));
    }
    secrets
}

/// Builds the object store for `url`, and the path of the Zarr store inside it.
pub fn build_object_store(
    url: &str,
    display_url: &str,
    options: &StorageOptions,
) -> Result<Remote> {
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::InvalidArgument(format!("{display_url} is not a valid URL: {e}")))?;
    let scheme = parsed.scheme().to_string(); // lower case, as the url crate keeps it
    let family = match scheme.as_str() {
        "s3" | "s3a" => "s3",
        "gs" | "gcs" => "gs",
        "az" | "azure" | "abfs" | "abfss" | "adl" => "az",
        "http" | "https" => "http",
        _ => {
            return Err(Error::UnsupportedUrl {
                url: display_url.to_string(),
            })
        }
    };
    let Parsed { retry, pairs } = parse_options(family, options)?;
    let host = host_key(&parsed);
    let watched = || Watched { host: host.clone() };
    let secrets = option_secrets(options);
    // The store's path inside the bucket or container, percent-decoded segment by segment
    // by object_store's own parser (which refuses empty, `.` and `..` segments).
    let prefix = match parsed.path().trim_matches('/') {
        "" => String::new(),
        path => object_store::path::Path::from_url_path(path)
            .map_err(|e| Error::InvalidArgument(format!("{display_url}: {e}")))?
            .to_string(),
    };
    // The builders' messages quote the values they could not parse, and a secret may have been
    // given under any key (a token pasted as `region`, say): no option value is shown.
    let invalid = |e: object_store::Error| {
        Error::InvalidArgument(format!(
            "{display_url}: {}",
            without_values(&e.to_string(), options)
        ))
    };
    let store: Arc<dyn ObjectStore> = match family {
        "s3" => {
            let mut builder = AmazonS3Builder::from_env()
                .with_url(url)
                .with_http_connector(watched());
            for (key, value) in pairs {
                let parsed = key.parse().map_err(|_| unknown_key(&scheme, &key))?;
                builder = builder.with_config(parsed, value);
            }
            Arc::new(builder.with_retry(retry).build().map_err(invalid)?)
        }
        "gs" => {
            // object_store knows the scheme as `gs` only.
            let gs_url = format!("gs{}", &url[scheme.len()..]);
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_url(gs_url)
                .with_http_connector(watched());
            for (key, value) in pairs {
                let parsed = key.parse().map_err(|_| unknown_key(&scheme, &key))?;
                builder = builder.with_config(parsed, value);
            }
            Arc::new(builder.with_retry(retry).build().map_err(invalid)?)
        }
        "az" => {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_http_connector(watched());
            for (key, value) in pairs {
                let parsed = key.parse().map_err(|_| unknown_key(&scheme, &key))?;
                builder = builder.with_config(parsed, value);
            }
            Arc::new(builder.with_retry(retry).build().map_err(invalid)?)
        }
        _ => {
            // The HTTP store's paths are relative to its URL: the URL is the store root.
            let mut root = parsed.clone();
            root.set_query(None);
            root.set_fragment(None);
            let base = root.as_str().trim_end_matches('/');
            let mut builder = HttpBuilder::new()
                .with_url(base)
                .with_http_connector(watched());
            for (key, value) in pairs {
                if key == "skip_signature" {
                    continue; // nothing is signed over plain HTTP
                }
                let parsed: ClientConfigKey =
                    key.parse().map_err(|_| unknown_key(&scheme, &key))?;
                builder = builder.with_config(parsed, value);
            }
            if scheme == "http" {
                builder = builder.with_config(ClientConfigKey::AllowHttp, "true");
            }
            return Ok(Remote {
                store: Arc::new(builder.with_retry(retry).build().map_err(invalid)?),
                prefix: String::new(),
                secrets,
            });
        }
    };
    Ok(Remote {
        store,
        prefix,
        secrets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_user_info_and_queries() {
        assert_eq!(
            redact_url("https://user:pw@host/a/b?sig=abc"),
            "https://***@host/a/b?***"
        );
        assert_eq!(redact_url("s3://bucket/a.zarr"), "s3://bucket/a.zarr");
        assert_eq!(redact_url("/tmp/x"), "/tmp/x");
        assert_eq!(
            redact_url("https://host/a#access_token=abc"),
            "https://host/a"
        );
    }

    #[test]
    fn the_path_inside_the_bucket_is_parsed_by_object_store() {
        let options = StorageOptions::new();
        let prefix = |url: &str| build_object_store(url, url, &options).map(|r| r.prefix);
        assert_eq!(prefix("s3://bucket/a/b.zarr/").unwrap(), "a/b.zarr");
        assert_eq!(prefix("S3://bucket/a.zarr?versionId=7").unwrap(), "a.zarr");
        assert_eq!(prefix("gs://bucket").unwrap(), "");
        assert_eq!(
            prefix("s3://bucket/my%20store.zarr").unwrap(),
            "my store.zarr"
        );
        assert_eq!(
            prefix("abfss://container@account.dfs.core.windows.net/x/y.zarr").unwrap(),
            "x/y.zarr"
        );
        assert_eq!(prefix("https://host/a/b.zarr?sig=1").unwrap(), "");
        // Dot segments are resolved as in any URL, never above the bucket.
        assert_eq!(prefix("s3://bucket/a/../../b").unwrap(), "b");
        for bad in ["s3://bucket/a//b", "s3://bu cket/a", "s3://"] {
            assert!(
                matches!(prefix(bad), Err(Error::InvalidArgument(_))),
                "{bad}: {:?}",
                prefix(bad).map_err(|e| e.to_string())
            );
        }
    }

    #[test]
    fn unknown_keys_are_named_without_values() {
        let options: StorageOptions = [("no_such_key".to_string(), "hunter22".to_string())]
            .into_iter()
            .collect();
        let Err(err) = build_object_store("s3://b/x", "s3://b/x", &options) else {
            panic!("an unknown key must fail")
        };
        let text = err.to_string();
        assert!(
            text.contains("no_such_key") && !text.contains("hunter22"),
            "{text}"
        );
    }

    #[test]
    fn values_of_ordinary_keys_are_not_echoed_either() {
        // A token pasted as the value of a key that is not a secret's, which the builder
        // cannot parse, and credentials inside an endpoint URL.
        let options: StorageOptions = [
            ("skip_signature", "ghp_t0kenValue"),
            ("endpoint", "http://admin:passw0rd@127.0.0.1:9"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let Err(err) = build_object_store("s3://b/x", "s3://b/x", &options) else {
            panic!("an unparsable boolean must fail")
        };
        let text = err.to_string();
        assert!(
            !text.contains("ghp_t0kenValue") && !text.contains("passw0rd"),
            "{text}"
        );
        let Ok(remote) = build_object_store(
            "s3://b/x",
            "s3://b/x",
            &[("endpoint", "http://admin:passw0rd@127.0.0.1:9")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ) else {
            panic!("an endpoint with user info builds")
        };
        assert!(remote.secrets.contains(&"passw0rd".to_string()));
    }

    #[test]
    fn s3_with_endpoint_and_credentials_builds() {
        let options: StorageOptions = [
            ("endpoint_url", "http://127.0.0.1:9"),
            ("key", "AKIDEXAMPLE"),
            ("secret", "s3cr3t-value"),
            ("region", "us-east-1"),
            ("timeout", "2.5"),
            ("max_retries", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let remote = build_object_store("s3://bucket/a/b.zarr", "s3://bucket/a/b.zarr", &options)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(remote.prefix, "a/b.zarr");
        assert!(remote.secrets.contains(&"s3cr3t-value".to_string()));
        assert!(!format!("{:?}", remote.store).contains("s3cr3t-value"));
    }
}
