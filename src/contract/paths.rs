//! Matching concrete request paths against swagger path templates (pure functions).
//!
//! ARM compares literal segments case-insensitively (`resourcegroups` in the DataSources spec vs
//! `resourceGroups` on the wire). A parameter marked `x-ms-skip-url-encoding` (DCRA `{resourceUri}`)
//! may span several segments.

use std::collections::BTreeMap;

/// One `/`-separated piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}` alone in its segment; `multi` when it may span several segments.
    Param {
        name: String,
        multi: bool,
    },
    /// A segment mixing text and one parameter, e.g. `{name}.json`.
    Mixed {
        prefix: String,
        name: String,
        suffix: String,
    },
}

/// Splits a template into segments; `multi` names the parameters allowed to span segments.
pub fn parse_template(template: &str, multi: &std::collections::HashSet<&str>) -> Vec<Segment> {
    template
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|seg| match (seg.find('{'), seg.find('}')) {
            (Some(open), Some(close)) if open < close => {
                let name = seg[open + 1..close].to_string();
                if open == 0 && close == seg.len() - 1 {
                    let multi = multi.contains(name.as_str());
                    Segment::Param { name, multi }
                } else {
                    Segment::Mixed {
                        prefix: seg[..open].to_string(),
                        name,
                        suffix: seg[close + 1..].to_string(),
                    }
                }
            }
            _ => Segment::Literal(seg.to_string()),
        })
        .collect()
}

/// Splits a concrete path into percent-decoded segments.
pub fn split_path(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

/// Matches decoded path segments against a template; returns the parameter values.
pub fn match_segments(template: &[Segment], path: &[String]) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    if match_from(template, path, &mut params) {
        Some(params)
    } else {
        None
    }
}

fn match_from(t: &[Segment], p: &[String], out: &mut BTreeMap<String, String>) -> bool {
    let Some((first, rest)) = t.split_first() else {
        return p.is_empty();
    };
    match first {
        Segment::Literal(lit) => {
            !p.is_empty() && p[0].eq_ignore_ascii_case(lit) && match_from(rest, &p[1..], out)
        }
        Segment::Param { name, multi: false } => {
            if p.is_empty() {
                return false;
            }
            out.insert(name.clone(), p[0].clone());
            match_from(rest, &p[1..], out) || {
                out.remove(name);
                false
            }
        }
        Segment::Param { name, multi: true } => {
            // Try the longest span first so `/{resourceUri}/providers/...` keeps nested providers.
            for take in (1..=p.len()).rev() {
                out.insert(name.clone(), p[..take].join("/"));
                if match_from(rest, &p[take..], out) {
                    return true;
                }
            }
            out.remove(name);
            false
        }
        Segment::Mixed {
            prefix,
            name,
            suffix,
        } => {
            let Some(seg) = p.first() else {
                return false;
            };
            let lower = seg.to_ascii_lowercase();
            if seg.len() <= prefix.len() + suffix.len()
                || !lower.starts_with(&prefix.to_ascii_lowercase())
                || !lower.ends_with(&suffix.to_ascii_lowercase())
            {
                return false;
            }
            out.insert(
                name.clone(),
                seg[prefix.len()..seg.len() - suffix.len()].to_string(),
            );
            match_from(rest, &p[1..], out) || {
                out.remove(name);
                false
            }
        }
    }
}

/// Orders templates: more literal segments first, then fewer multi-segment parameters.
pub fn specificity(template: &[Segment]) -> (usize, usize, usize) {
    let literals = template
        .iter()
        .filter(|s| matches!(s, Segment::Literal(_)))
        .count();
    let multis = template
        .iter()
        .filter(|s| matches!(s, Segment::Param { multi: true, .. }))
        .count();
    (literals, usize::MAX - multis, template.len())
}

/// Decodes `%XX` escapes; malformed escapes are kept literally.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything outside RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits `path?query` (or a full URL) into the path and decoded query pairs.
pub fn split_path_and_query(input: &str) -> (String, Vec<(String, String)>) {
    let without_origin = match input.find("://") {
        Some(i) => {
            let after = &input[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => input,
    };
    let (path, query) = without_origin
        .split_once('?')
        .unwrap_or((without_origin, ""));
    let pairs = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (path.to_string(), pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn t(template: &str, multi: &[&str]) -> Vec<Segment> {
        parse_template(template, &multi.iter().copied().collect::<HashSet<_>>())
    }

    #[test]
    fn resource_uri_spans_segments_and_keeps_nested_providers() {
        let tpl = t(
            "/{resourceUri}/providers/Microsoft.Insights/dataCollectionRuleAssociations/{associationName}",
            &["resourceUri"],
        );
        let path = split_path(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/providers/Microsoft.Insights/dataCollectionRuleAssociations/a1",
        );
        let m = match_segments(&tpl, &path).unwrap();
        assert_eq!(
            m["resourceUri"],
            "subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
        );
        assert_eq!(m["associationName"], "a1");
    }

    #[test]
    fn single_segment_params_do_not_span_and_literals_are_case_insensitive() {
        let tpl = t("/subscriptions/{s}/resourcegroups/{rg}", &[]);
        assert!(match_segments(&tpl, &split_path("/subscriptions/x/resourceGroups/y")).is_some());
        assert!(match_segments(&tpl, &split_path("/subscriptions/x/y/resourceGroups/z")).is_none());
        assert!(match_segments(&tpl, &split_path("/subscriptions/x/resourceGroups")).is_none());
    }

    #[test]
    fn decoding_and_query_splitting() {
        assert_eq!(percent_decode("a%20b%2Fc%zz%"), "a b/c%zz%");
        let (p, q) = split_path_and_query(
            "http://127.0.0.1:9/x/y?api-version=2023-03-11&%24filter=kind%20eq%20'A'",
        );
        assert_eq!(p, "/x/y");
        assert_eq!(q[0], ("api-version".into(), "2023-03-11".into()));
        assert_eq!(q[1], ("$filter".into(), "kind eq 'A'".into()));
        assert_eq!(percent_encode("a b/{c}"), "a%20b%2F%7Bc%7D");
    }

    #[test]
    fn more_literals_is_more_specific() {
        let a = t("/{resourceUri}/providers/X/y", &["resourceUri"]);
        let b = t("/subscriptions/{s}/providers/X/y", &[]);
        assert!(specificity(&b) > specificity(&a));
    }
}
