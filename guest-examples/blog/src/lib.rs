//! `blog`: the seed's `--path /blog` example, a handler-only component.
//!
//! The platform routes `/blog...` here without stripping the prefix, so the
//! handler sees the original path:
//!
//! - `GET /blog`, `GET /blog/`  an HTML list of the posts
//! - `GET /blog/<slug>`         the post, or 404 `no post <slug>`
//! - anything else              404

use kit::respond;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

wasip2::http::proxy::export!(Blog);

struct Blog;

/// (slug, title, text)
const POSTS: &[(&str, &str, &str)] = &[
    (
        "hello-world",
        "Hello, world",
        "The first post, served by a WebAssembly component.",
    ),
    (
        "second-post",
        "A second post",
        "Served under /blog: the platform keeps the prefix in the path.",
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

impl wasip2::exports::http::incoming_handler::Guest for Blog {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let path = path_with_query.split('?').next().unwrap_or("/");
        let get = matches!(request.method(), Method::Get | Method::Head);

        let (status, content_type, body) = match path.strip_prefix("/blog") {
            Some("" | "/") if get => (200, HTML, index()),
            Some(rest) if rest.starts_with('/') && get => {
                let slug = &rest[1..];
                match POSTS.iter().find(|(s, _, _)| *s == slug) {
                    Some(post) => (200, HTML, page(post)),
                    None => (404, TEXT, format!("no post {slug}\n")),
                }
            }
            Some("" | "/") => (405, TEXT, "method not allowed\n".to_string()),
            Some(rest) if rest.starts_with('/') => (405, TEXT, "method not allowed\n".to_string()),
            // `/blogger` and friends are not ours.
            _ => (404, TEXT, format!("not found: {path}\n")),
        };
        respond(response_out, status, content_type, body.as_bytes());
    }
}

fn index() -> String {
    let mut items = String::new();
    for (slug, title, _) in POSTS {
        items.push_str(&format!("<li><a href=\"/blog/{slug}\">{title}</a></li>\n"));
    }
    format!(
        "<!doctype html>\n<html><head><title>blog</title></head><body>\n\
         <h1>blog</h1>\n<ul>\n{items}</ul>\n</body></html>\n"
    )
}

fn page((_, title, text): &(&str, &str, &str)) -> String {
    format!(
        "<!doctype html>\n<html><head><title>{title}</title></head><body>\n\
         <h1>{title}</h1>\n<p>{text}</p>\n<p><a href=\"/blog/\">all posts</a></p>\n\
         </body></html>\n"
    )
}
