//! Finding subresources the way a browser's preload scanner would: in
//! `Link: <…>; rel=preload` headers and in `<link href>`, `<script src>` and
//! `<img src>` elements.

/// Same-origin paths of `rel=preload` targets in Link header values.
pub fn preload_paths<'a>(values: impl Iterator<Item = &'a str>, base: &str) -> Vec<String> {
    let mut out = Vec::new();
    for value in values {
        for entry in split_link_entries(value) {
            let Some((uri, params)) = parse_entry(entry) else {
                continue;
            };
            let is_preload = params.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("rel")
                    && v.split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("preload"))
            });
            if is_preload {
                if let Some(p) = resolve(base, uri) {
                    push_unique(&mut out, p);
                }
            }
        }
    }
    out
}

/// Splits a Link header value at top-level commas (commas inside <…> or quotes stay).
fn split_link_entries(value: &str) -> Vec<&str> {
    let mut entries = Vec::new();
    let (mut in_uri, mut in_quote, mut start) = (false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quote => in_uri = true,
            '>' if !in_quote => in_uri = false,
            '"' if !in_uri => in_quote = !in_quote,
            ',' if !in_uri && !in_quote => {
                entries.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    entries.push(&value[start..]);
    entries
}

fn parse_entry(entry: &str) -> Option<(&str, Vec<(String, String)>)> {
    let entry = entry.trim();
    let rest = entry.strip_prefix('<')?;
    let end = rest.find('>')?;
    let uri = &rest[..end];
    let params = rest[end + 1..]
        .split(';')
        .filter_map(|p| {
            let p = p.trim();
            if p.is_empty() {
                return None;
            }
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect();
    Some((uri, params))
}

/// Subresource paths named in an HTML document, in document order.
pub fn html_subresources(html: &str, base: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut i = 0;
    while let Some(off) = lower[i..].find('<') {
        let start = i + off + 1;
        let end = match lower[start..].find('>') {
            Some(e) => start + e,
            None => break,
        };
        i = end + 1;
        let name_end = bytes[start..end]
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'/')
            .map_or(end, |p| start + p);
        let name = &lower[start..name_end];
        let attrs = parse_attrs(&html[name_end..end]);
        let attr = |key: &str| {
            attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        };
        let url = match name {
            "link" => {
                let rel = attr("rel").unwrap_or("").to_ascii_lowercase();
                let fetches = rel
                    .split_ascii_whitespace()
                    .any(|r| matches!(r, "stylesheet" | "preload" | "modulepreload" | "icon"));
                if fetches {
                    attr("href")
                } else {
                    None
                }
            }
            "script" | "img" => attr("src"),
            _ => None,
        };
        if let Some(p) = url.and_then(|u| resolve(base, u)) {
            push_unique(&mut out, p);
        }
    }
    out
}

/// Attributes of one start tag: `key=value`, `key="value"`, `key='value'` or bare `key`.
fn parse_attrs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        if ks == i {
            break;
        }
        let key = s[ks..i].to_string();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let vs = i + 1;
                i = vs;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                value = s[vs..i.min(b.len())].to_string();
                i += 1;
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = s[vs..i].to_string();
            }
        }
        out.push((key, value));
    }
    out
}

/// Resolves a same-origin reference against the page path. Absolute URLs
/// (other origins) are ignored: the benchmark pages only use local paths.
pub fn resolve(base: &str, uri: &str) -> Option<String> {
    let uri = uri.trim();
    if uri.is_empty() || uri.starts_with('#') || uri.contains("://") || uri.starts_with("//") {
        return None;
    }
    let uri = uri.split('#').next().unwrap_or(uri);
    if uri.starts_with('/') {
        return Some(uri.to_string());
    }
    let base = base.split('?').next().unwrap_or(base);
    let dir = match base.rfind('/') {
        Some(p) => &base[..=p],
        None => "/",
    };
    let joined = format!("{dir}{uri}");
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn push_unique(v: &mut Vec<String>, p: String) {
    if !v.contains(&p) {
        v.push(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_values() {
        let v = [
            "</a.css>; rel=preload; as=style, </b.js>; rel=\"preload nopush\"; as=script",
            "<https://other.example/x.js>; rel=preload",
            "</c.js>; rel=prefetch",
        ];
        assert_eq!(
            preload_paths(v.iter().copied(), "/p/index.html"),
            vec!["/a.css".to_string(), "/b.js".to_string()]
        );
    }

    #[test]
    fn html_elements() {
        let html = r#"<!doctype html><html><head>
            <link rel="stylesheet" href="/s/1.css"><link rel=icon href=fav.ico>
            <link rel="canonical" href="/ignored">
            <script src='../js/app.js' defer></script></head>
            <body><IMG SRC="img/x.png" alt="x"><img src="/s/1.css"></body></html>"#;
        assert_eq!(
            html_subresources(html, "/p/index.html"),
            vec!["/s/1.css", "/p/fav.ico", "/js/app.js", "/p/img/x.png"]
        );
    }
}
