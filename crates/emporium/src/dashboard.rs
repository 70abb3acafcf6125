//! The live dashboard at `/dashboard`: one page for an operator watching the pipeline (orders per
//! status, throughput, the live event feed, dead letters, consumer lag, one order's saga).
//!
//! The page is plain HTML, CSS and JS embedded in the binary (no build step, no CDN: it works on a
//! machine without internet). It reads the admin endpoints of `crate::operations`, the live part from
//! the Server-Sent Events of `/api/events/stream`. Every response carries a strict
//! Content-Security-Policy: scripts and styles from this origin only, nothing inline.

use axum::{Json, Router, http::header, response::Redirect, routing::get};

/// Scripts, styles, images and requests from this origin only; no inline code, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Every file of the page: path, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/dashboard",
        "text/html; charset=utf-8",
        include_str!("../assets/dashboard/index.html"),
    ),
    (
        "/dashboard/dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/dashboard/dashboard.js"),
    ),
    (
        "/dashboard/dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../assets/dashboard/dashboard.css"),
    ),
    (
        "/dashboard/favicon.svg",
        "image/svg+xml",
        include_str!("../assets/dashboard/favicon.svg"),
    ),
];

/// The page's routes. `admin_configured` tells the login form whether to explain how to configure
/// an admin (`EMPORIUM_ADMIN_EMAIL` / `EMPORIUM_ADMIN_PASSWORD`).
pub fn router(admin_configured: bool) -> Router {
    let mut router = Router::new()
        .route(
            "/dashboard/",
            get(|| async { Redirect::permanent("/dashboard") }),
        )
        .route(
            "/dashboard/config.json",
            get(move || async move {
                (
                    headers("application/json"),
                    Json(serde_json::json!({ "adminConfigured": admin_configured })),
                )
            }),
        );
    for &(path, content_type, body) in ASSETS {
        router = router.route(
            path,
            get(move || async move { (headers(content_type), body) }),
        );
    }
    router
}

fn headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 5] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Small files; always revalidated, so a new binary's page is never mixed with an old script.
        (header::CACHE_CONTROL, "no-cache"),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::ASSETS;

    fn asset(path: &str) -> &'static str {
        ASSETS.iter().find(|(p, _, _)| *p == path).unwrap().2
    }

    /// The values of `attribute="..."` in `html`.
    fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
        let needle = format!(" {attribute}=\"");
        html.match_indices(&needle)
            .map(|(at, _)| {
                let rest = &html[at + needle.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect()
    }

    #[test]
    fn the_page_loads_only_files_the_binary_serves() {
        let html = asset("/dashboard");
        let mut referenced = attribute_values(html, "src");
        referenced.extend(attribute_values(html, "href"));
        assert!(referenced.len() >= 3, "{referenced:?}");
        for path in referenced {
            assert!(
                ASSETS.iter().any(|(p, _, _)| *p == path),
                "index.html loads {path}, which is not embedded"
            );
        }
        for (path, _, body) in ASSETS {
            for outside in ["http://", "https://", "//cdn"] {
                let hits: Vec<_> = body
                    .match_indices(outside)
                    // The SVG namespace is a name, not a request.
                    .filter(|(at, _)| !body[*at..].starts_with("http://www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{path} refers to another origin");
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_code_that_the_policy_would_block() {
        let html = asset("/dashboard");
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains(" src=\""), "inline script: <script{tag}>");
        }
        assert!(!html.contains("<style"), "inline style element");
        assert!(!html.contains(" style=\""), "inline style attribute");
        for (at, _) in html.match_indices(" on") {
            let name: String = html[at + 3..]
                .chars()
                .take_while(char::is_ascii_lowercase)
                .collect();
            assert!(
                name.is_empty() || !html[at + 3 + name.len()..].starts_with("=\""),
                "inline event handler on{name}"
            );
        }
        let js = asset("/dashboard/dashboard.js");
        // Style attributes set as text are inline styles to the policy; `.style.x =` is not.
        assert!(
            !js.contains("\"style\""),
            "a style attribute set from the script"
        );
        assert!(!js.contains("innerHTML"), "markup built from strings");
        assert!(!js.contains("eval("), "eval");
    }
}
