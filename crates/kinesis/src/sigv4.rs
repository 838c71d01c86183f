//! AWS Signature Version 4 verification (`AWS4-HMAC-SHA256`), header and presigned-query forms.
//!
//! The canonical request and string to sign are rebuilt here from the received request; the key
//! derivation and HMAC come from the `aws-sigv4` crate. Invariants: a request passes only when
//! its access key is known, its credential scope names the `kinesis` service, its time is within
//! the allowed skew (and, presigned, not past `X-Amz-Expires`), and the signature over method,
//! path, query, the signed headers and the body hash matches (compared in constant time).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

use crate::Error;

/// How requests are authenticated.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Development mode: any request is accepted, signed or not, with any key (as local
    /// emulators do).
    Development,
    /// SigV4 with these access keys (access key id → secret).
    Keys(HashMap<String, String>),
}

/// Allowed difference between the request time and the server clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The parts of a request that SigV4 covers.
pub struct RequestParts<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path (as received, percent-encoded).
    pub path: &'a str,
    /// Raw query string (without `?`).
    pub query: &'a str,
    /// Headers (names are matched case-insensitively; repeated headers appear repeatedly).
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: &'a [u8],
}

impl RequestParts<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Claimed {
    access_key: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    expires: Option<u64>,
    presigned: bool,
}

const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn uri_encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

impl Auth {
    /// Reads an AWS shared credentials file (`[profile]` sections with `aws_access_key_id` and
    /// `aws_secret_access_key`); every profile's key is accepted.
    pub fn parse_credentials_file(text: &str) -> Result<HashMap<String, String>, String> {
        let mut keys = HashMap::new();
        let mut id: Option<String> = None;
        let mut secret: Option<String> = None;
        let mut flush = |id: &mut Option<String>, secret: &mut Option<String>| {
            if let (Some(i), Some(s)) = (id.take(), secret.take()) {
                keys.insert(i, s);
            }
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                flush(&mut id, &mut secret);
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("line {}: expected `key = value`", n + 1));
            };
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
        flush(&mut id, &mut secret);
        Ok(keys)
    }

    /// Verifies `req` at time `now`; returns the access key id of the caller (None in
    /// development mode for unsigned requests).
    pub fn verify(&self, req: &RequestParts<'_>, now: SystemTime) -> Result<Option<String>, Error> {
        let keys = match self {
            Auth::Development => {
                return Ok(parse_claim(req).ok().flatten().map(|c| c.access_key));
            }
            Auth::Keys(k) => k,
        };
        let claim = parse_claim(req)?.ok_or_else(|| {
            Error::MissingAuthenticationToken("Missing Authentication Token".into())
        })?;
        let Some(secret) = keys.get(&claim.access_key) else {
            return Err(Error::UnrecognizedClient(
                "The security token included in the request is invalid.".into(),
            ));
        };
        if claim.service != "kinesis" {
            return Err(Error::InvalidSignature(format!(
                "Credential should be scoped to correct service: 'kinesis'. (found '{}')",
                claim.service
            )));
        }
        let signed_at = parse_amz_date(&claim.amz_date).ok_or_else(|| {
            Error::IncompleteSignature(format!(
                "Date must be in ISO-8601 'basic format'. Got '{}'. See http://en.wikipedia.org/wiki/ISO_8601",
                claim.amz_date
            ))
        })?;
        if !claim.amz_date.starts_with(&claim.date) {
            return Err(Error::InvalidSignature(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
                claim.date,
                &claim.amz_date[..8.min(claim.amz_date.len())],
                claim.amz_date
            )));
        }
        check_time(&claim, signed_at, now)?;
        let canonical_headers = canonical_headers(req, &claim.signed_headers)?;
        let body_hash = match req.header("x-amz-content-sha256") {
            Some(h) => h.to_string(),
            None => hex::encode(Sha256::digest(req.body)),
        };
        let mut candidates = vec![body_hash];
        if claim.presigned {
            candidates.push("UNSIGNED-PAYLOAD".into());
        }
        let key = aws_sigv4::sign::v4::generate_signing_key(
            secret,
            signed_at,
            &claim.region,
            &claim.service,
        );
        for payload_hash in candidates {
            let canonical = format!(
                "{}\n{}\n{}\n{}\n{}\n{}",
                req.method,
                canonical_path(req.path),
                canonical_query(req.query),
                canonical_headers,
                claim.signed_headers.join(";"),
                payload_hash
            );
            let string_to_sign = format!(
                "AWS4-HMAC-SHA256\n{}\n{}/{}/{}/aws4_request\n{}",
                claim.amz_date,
                claim.date,
                claim.region,
                claim.service,
                hex::encode(Sha256::digest(canonical.as_bytes()))
            );
            let expected =
                aws_sigv4::sign::v4::calculate_signature(key.as_ref(), string_to_sign.as_bytes());
            if constant_time_eq(expected.as_bytes(), claim.signature.as_bytes()) {
                return Ok(Some(claim.access_key));
            }
        }
        Err(Error::InvalidSignature(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into(),
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_time(claim: &Claimed, signed_at: SystemTime, now: SystemTime) -> Result<(), Error> {
    let fmt = |t: SystemTime| format_amz_date(t);
    if let Some(expires) = claim.expires {
        let end = signed_at + Duration::from_secs(expires);
        if now > end {
            return Err(Error::InvalidSignature(format!(
                "Signature expired: {} is now earlier than {} ({} - {expires} sec.)",
                fmt(end),
                fmt(now),
                fmt(now)
            )));
        }
    }
    if signed_at + MAX_SKEW < now {
        return Err(Error::InvalidSignature(format!(
            "Signature expired: {} is now earlier than {} ({} - 15 min.)",
            claim.amz_date,
            fmt(now - MAX_SKEW),
            fmt(now)
        )));
    }
    if signed_at > now + MAX_SKEW {
        return Err(Error::InvalidSignature(format!(
            "Signature not yet current: {} is still later than {} ({} + 15 min.)",
            claim.amz_date,
            fmt(now + MAX_SKEW),
            fmt(now)
        )));
    }
    Ok(())
}

/// Finds the claimed credentials: the Authorization header, else the presigned query.
/// `Ok(None)` when the request carries neither.
fn parse_claim(req: &RequestParts<'_>) -> Result<Option<Claimed>, Error> {
    if let Some(auth) = req.header("authorization") {
        let Some(rest) = auth.trim().strip_prefix("AWS4-HMAC-SHA256") else {
            return Err(Error::IncompleteSignature(format!(
                "Unsupported authorization type: only AWS4-HMAC-SHA256 is accepted (got '{}')",
                auth.split_whitespace().next().unwrap_or("")
            )));
        };
        let mut parts: HashMap<&str, &str> = HashMap::new();
        for p in rest.split(',') {
            if let Some((k, v)) = p.trim().split_once('=') {
                parts.insert(k.trim(), v.trim());
            }
        }
        let missing: Vec<&str> = ["Credential", "SignedHeaders", "Signature"]
            .into_iter()
            .filter(|k| !parts.contains_key(k))
            .collect();
        if !missing.is_empty() {
            return Err(Error::IncompleteSignature(format!(
                "Authorization header requires {} parameter{}. Authorization={auth}",
                missing
                    .iter()
                    .map(|m| format!("'{m}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if missing.len() > 1 { "s" } else { "" }
            )));
        }
        let amz_date = req
            .header("x-amz-date")
            .or_else(|| req.header("date"))
            .ok_or_else(|| {
                Error::IncompleteSignature(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                        .into(),
                )
            })?
            .to_string();
        return claimed(
            parts["Credential"],
            parts["SignedHeaders"],
            parts["Signature"],
            amz_date,
            None,
            false,
        )
        .map(Some);
    }
    let q: HashMap<String, String> = form_urlencoded::parse(req.query.as_bytes())
        .into_owned()
        .collect();
    if !q.contains_key("X-Amz-Signature") && !q.contains_key("X-Amz-Credential") {
        return Ok(None);
    }
    let get = |k: &str| {
        q.get(k).cloned().ok_or_else(|| {
            Error::IncompleteSignature(format!(
                "AWS query-string parameters must include '{k}'. Re-examine the query-string parameters."
            ))
        })
    };
    if get("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
        return Err(Error::IncompleteSignature(
            "X-Amz-Algorithm only supports 'AWS4-HMAC-SHA256'".into(),
        ));
    }
    let expires = get("X-Amz-Expires")?
        .parse::<u64>()
        .map_err(|_| Error::IncompleteSignature("X-Amz-Expires should be a number".into()))?;
    claimed(
        &get("X-Amz-Credential")?,
        &get("X-Amz-SignedHeaders")?,
        &get("X-Amz-Signature")?,
        get("X-Amz-Date")?,
        Some(expires),
        true,
    )
    .map(Some)
}

fn claimed(
    credential: &str,
    signed_headers: &str,
    signature: &str,
    amz_date: String,
    expires: Option<u64>,
    presigned: bool,
) -> Result<Claimed, Error> {
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" {
        return Err(Error::IncompleteSignature(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
        )));
    }
    let mut headers: Vec<String> = signed_headers
        .split(';')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    headers.sort();
    Ok(Claimed {
        access_key: parts[0].to_string(),
        date: parts[1].to_string(),
        region: parts[2].to_string(),
        service: parts[3].to_string(),
        signed_headers: headers,
        signature: signature.to_string(),
        amz_date,
        expires,
        presigned,
    })
}

fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(|seg| {
            let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
            uri_encode(&decoded)
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (uri_encode(&dec(k)), uri_encode(&dec(v)))
        })
        .filter(|(k, _)| k != "X-Amz-Signature")
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_headers(req: &RequestParts<'_>, signed: &[String]) -> Result<String, Error> {
    let mut out = String::new();
    for name in signed {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(Error::InvalidSignature(format!(
                "The request signature we calculated does not match the signature you provided: signed header '{name}' is missing from the request."
            )));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Formats a time as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn auth() -> Auth {
        Auth::Keys(HashMap::from([(AKID.to_string(), SECRET.to_string())]))
    }

    /// Signs a request with the aws-sigv4 signer (what the AWS SDKs use) and returns its headers.
    fn signed(
        secret: &str,
        at: SystemTime,
        body: &[u8],
        presign: bool,
    ) -> (Vec<(String, String)>, String) {
        let creds = aws_sigv4::sign::v4::SigningParams::builder();
        let identity = aws_credential_identity(secret);
        let mut settings = SigningSettings::default();
        if presign {
            settings.signature_location = aws_sigv4::http_request::SignatureLocation::QueryParams;
            settings.expires_in = Some(Duration::from_secs(300));
        }
        let params = creds
            .identity(&identity)
            .region("us-east-1")
            .name("kinesis")
            .time(at)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let headers = vec![
            ("host".to_string(), "127.0.0.1:4567".to_string()),
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            (
                "x-amz-target".to_string(),
                "Kinesis_20131202.ListStreams".to_string(),
            ),
        ];
        let req = SignableRequest::new(
            "POST",
            "http://127.0.0.1:4567/",
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _sig) = sign(req, &params).unwrap().into_parts();
        let mut out = headers.clone();
        for (k, v) in instructions.headers() {
            out.push((k.to_string(), v.to_string()));
        }
        let query = instructions
            .params()
            .iter()
            .map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        (out, query)
    }

    fn aws_credential_identity(secret: &str) -> aws_smithy_runtime_api::client::identity::Identity {
        aws_credential_types::Credentials::new(AKID, secret, None, None, "test").into()
    }

    fn parts<'a>(
        headers: Vec<(String, String)>,
        query: &'a str,
        body: &'a [u8],
    ) -> RequestParts<'a> {
        RequestParts {
            method: "POST",
            path: "/",
            query,
            headers,
            body,
        }
    }

    #[test]
    fn sdk_signed_requests_pass_and_tampering_fails() {
        let now = SystemTime::now();
        let body = br#"{"Limit":5}"#;
        let (headers, _) = signed(SECRET, now, body, false);
        assert_eq!(
            auth()
                .verify(&parts(headers.clone(), "", body), now)
                .unwrap(),
            Some(AKID.to_string())
        );
        // Tampered body.
        let e = auth()
            .verify(&parts(headers.clone(), "", br#"{"Limit":6}"#), now)
            .unwrap_err();
        assert_eq!(e.type_name(), "InvalidSignatureException");
        // Wrong secret.
        let (bad, _) = signed("not-the-secret", now, body, false);
        let e = auth().verify(&parts(bad, "", body), now).unwrap_err();
        assert_eq!(e.type_name(), "InvalidSignatureException");
        // Stale date.
        let old = now - Duration::from_secs(20 * 60);
        let (stale, _) = signed(SECRET, old, body, false);
        let e = auth().verify(&parts(stale, "", body), now).unwrap_err();
        assert_eq!(e.type_name(), "InvalidSignatureException");
        assert!(
            e.message().starts_with("Signature expired: "),
            "{}",
            e.message()
        );
        // Unknown key, missing auth, incomplete header.
        let e = Auth::Keys(HashMap::from([("OTHER".into(), SECRET.into())]))
            .verify(&parts(headers.clone(), "", body), now)
            .unwrap_err();
        assert_eq!(e.type_name(), "UnrecognizedClientException");
        let e = auth().verify(&parts(vec![], "", body), now).unwrap_err();
        assert_eq!(e.type_name(), "MissingAuthenticationTokenException");
        let e = auth()
            .verify(
                &parts(
                    vec![(
                        "Authorization".into(),
                        "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request".into(),
                    )],
                    "",
                    body,
                ),
                now,
            )
            .unwrap_err();
        assert_eq!(e.type_name(), "IncompleteSignatureException");
        // Development mode accepts anything.
        assert!(Auth::Development
            .verify(&parts(vec![], "", body), now)
            .is_ok());
    }

    #[test]
    fn presigned_requests_pass_until_they_expire() {
        let now = SystemTime::now();
        let body = b"{}";
        let (headers, query) = signed(SECRET, now, body, true);
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
            .collect();
        assert!(query.contains("X-Amz-Signature="), "{query}");
        auth()
            .verify(&parts(headers.clone(), &query, body), now)
            .unwrap();
        let later = now + Duration::from_secs(301);
        let e = auth()
            .verify(&parts(headers, &query, body), later)
            .unwrap_err();
        assert_eq!(e.type_name(), "InvalidSignatureException");
    }

    #[test]
    fn amz_dates_round_trip() {
        let t = parse_amz_date("20261126T062449Z").unwrap();
        assert_eq!(format_amz_date(t), "20261126T062449Z");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_674_289
        );
        assert!(parse_amz_date("2026-11-26T06:24:49Z").is_none());
        assert!(parse_amz_date("20261326T062449Z").is_none());
    }

    #[test]
    fn credentials_file() {
        let keys = Auth::parse_credentials_file(
            "[default]\naws_access_key_id = A1\naws_secret_access_key = s1\n\n# c\n[other]\naws_access_key_id=A2\naws_secret_access_key=s2\n",
        )
        .unwrap();
        assert_eq!(keys.get("A1").map(String::as_str), Some("s1"));
        assert_eq!(keys.get("A2").map(String::as_str), Some("s2"));
        assert!(Auth::parse_credentials_file("garbage").is_err());
    }
}
