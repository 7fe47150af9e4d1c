//! The hand-off: how a request the gate cleared reaches the service behind it, with who is
//! calling.
//!
//! The gate decides; a [`Handoff`] delivers. The default, [`InsertIdentity`], puts the identity
//! headers into the request's header map (and a [`WhopUser`] into its extensions), which any
//! service can read. The sidecar's proxy takes them as values instead and writes them straight
//! into the upstream request head: four header-map inserts (each a hash of the name, a probe
//! and sometimes a regrowth) were most of what a gated request cost over a public one.

use http::Request;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tower_service::Service;

use super::user::WhopUser;

/// The identity header names as text, for matching (the one place they are spelled).
pub(crate) mod names {
    /// `x-whop-user-id`
    pub const USER_ID: &str = "x-whop-user-id";
    /// `x-whop-access-level`
    pub const ACCESS_LEVEL: &str = "x-whop-access-level";
    /// `x-whop-resource-id`
    pub const RESOURCE_ID: &str = "x-whop-resource-id";
    /// `x-whopgate-source`
    pub const SOURCE: &str = "x-whopgate-source";
    /// Every header starting with this is the gate's to set.
    pub const GATE_PREFIX: &str = "x-whopgate-";
}

/// `x-whop-user-id`
pub static X_WHOP_USER_ID: HeaderName = HeaderName::from_static(names::USER_ID);
/// `x-whop-access-level`
pub static X_WHOP_ACCESS_LEVEL: HeaderName = HeaderName::from_static(names::ACCESS_LEVEL);
/// `x-whop-resource-id`
pub static X_WHOP_RESOURCE_ID: HeaderName = HeaderName::from_static(names::RESOURCE_ID);
/// `x-whopgate-source`
pub static X_WHOPGATE_SOURCE: HeaderName = HeaderName::from_static(names::SOURCE);

/// The identity headers of one cleared request (SPEC §4), as values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub(super) user_id: HeaderValue,
    pub(super) source: HeaderValue,
    pub(super) access_level: Option<HeaderValue>,
    pub(super) resource_id: Option<HeaderValue>,
}

impl IdentityHeaders {
    /// The headers as `(name, value)` pairs: user id and source always, access level and
    /// resource id when a required resource granted access.
    pub fn fields(&self) -> impl Iterator<Item = (&'static HeaderName, &HeaderValue)> {
        [
            (&X_WHOP_USER_ID, Some(&self.user_id)),
            (&X_WHOPGATE_SOURCE, Some(&self.source)),
            (&X_WHOP_ACCESS_LEVEL, self.access_level.as_ref()),
            (&X_WHOP_RESOURCE_ID, self.resource_id.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
    }

    /// Calls `f` with each header, in the order of [`IdentityHeaders::fields`]: the proxy writes
    /// them this way, without an iterator's state between calls.
    pub(crate) fn each_field(&self, mut f: impl FnMut(&'static str, &HeaderValue)) {
        f(names::USER_ID, &self.user_id);
        f(names::SOURCE, &self.source);
        if let Some(level) = &self.access_level {
            f(names::ACCESS_LEVEL, level);
        }
        if let Some(resource) = &self.resource_id {
            f(names::RESOURCE_ID, resource);
        }
    }

    /// Puts the headers into `headers`, replacing any of the same name.
    pub fn insert_into(self, headers: &mut HeaderMap) {
        headers.insert(&X_WHOP_USER_ID, self.user_id);
        headers.insert(&X_WHOPGATE_SOURCE, self.source);
        if let Some(level) = self.access_level {
            headers.insert(&X_WHOP_ACCESS_LEVEL, level);
        }
        if let Some(resource) = self.resource_id {
            headers.insert(&X_WHOP_RESOURCE_ID, resource);
        }
    }
}

/// Who the gate let a request through as.
#[derive(Debug, Clone)]
pub struct Cleared {
    /// The identity headers the service behind the gate must see.
    pub headers: IdentityHeaders,
    /// The caller as a [`WhopUser`], when the hand-off asked for one ([`Handoff::wants_user`]).
    pub user: Option<WhopUser>,
}

/// Delivers a request the gate cleared to the service behind it.
///
/// The gate has already removed every identity header the client sent, so a hand-off that
/// drops [`Cleared::headers`] leaves the service with no identity at all, never a forged one.
///
/// A hand-off of your own, for an app that reads the caller only from [`WhopUser`]:
///
/// ```
/// use http::{Request, Response};
/// use http_body_util::BodyExt;
/// use tower::{Layer, Service, ServiceExt, service_fn};
/// use whopgate::{Cleared, Config, Gate, Handoff, WhopUser};
///
/// /// Only the extension: no identity headers for the app to parse.
/// #[derive(Clone)]
/// struct UserOnly;
///
/// impl<S: Service<Request<B>>, B> Handoff<S, B> for UserOnly {
///     fn wants_user(&self) -> bool {
///         true
///     }
///
///     fn call(&self, inner: &mut S, mut req: Request<B>, cleared: Option<Cleared>) -> S::Future {
///         if let Some(user) = cleared.and_then(|c| c.user) {
///             req.extensions_mut().insert(user);
///         }
///         inner.call(req)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::from_toml(r#"
///     [whop]
///     app_id = "app_xxxxxxxxxxxxxx"
///
///     [[route]]
///     path = "/"
///     public = true
/// "#, "inline.toml")?;
/// let gate = Gate::from_config(&config).await?;
/// let app = gate.layer().with_handoff(UserOnly).layer(service_fn(|req: Request<String>| async move {
///     let who = req.extensions().get::<WhopUser>().map_or("anonymous", |u| &*u.id).to_owned();
///     Ok::<_, std::convert::Infallible>(Response::new(who))
/// }));
/// let response = app.oneshot(Request::get("http://app.example/").body(String::new())?).await?;
/// assert_eq!(response.into_body().collect().await?.to_bytes(), "anonymous");
/// # Ok(())
/// # }
/// ```
pub trait Handoff<S, ReqB>: Clone
where
    S: Service<Request<ReqB>>,
{
    /// Whether [`Cleared::user`] should be filled in (it costs an allocation per request).
    fn wants_user(&self) -> bool;

    /// Calls `inner` with `req`, cleared for `cleared` (`None`: forwarded without an identity,
    /// as an anonymous caller on a public route).
    fn call(&self, inner: &mut S, req: Request<ReqB>, cleared: Option<Cleared>) -> S::Future;
}

/// The default [`Handoff`]: the identity headers go into the request's header map and the
/// [`WhopUser`] into its extensions, where any service (and the axum extractor) finds them.
#[derive(Debug, Clone, Copy)]
pub struct InsertIdentity {
    pub(super) user_extension: bool,
}

impl Default for InsertIdentity {
    fn default() -> Self {
        Self { user_extension: true }
    }
}

impl<S, ReqB> Handoff<S, ReqB> for InsertIdentity
where
    S: Service<Request<ReqB>>,
{
    fn wants_user(&self) -> bool {
        self.user_extension
    }

    fn call(&self, inner: &mut S, mut req: Request<ReqB>, cleared: Option<Cleared>) -> S::Future {
        if let Some(Cleared { headers, user }) = cleared {
            headers.insert_into(req.headers_mut());
            if let Some(user) = user {
                req.extensions_mut().insert(user);
            }
        }
        inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted() -> IdentityHeaders {
        IdentityHeaders {
            user_id: HeaderValue::from_static("user_1"),
            source: HeaderValue::from_static("user_token"),
            access_level: Some(HeaderValue::from_static("customer")),
            resource_id: Some(HeaderValue::from_static("prod_1")),
        }
    }

    #[test]
    fn fields_name_every_header_in_order() {
        let granted = granted();
        let fields: Vec<(&str, &str)> =
            granted.fields().map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("?"))).collect();
        assert_eq!(
            fields,
            [
                ("x-whop-user-id", "user_1"),
                ("x-whopgate-source", "user_token"),
                ("x-whop-access-level", "customer"),
                ("x-whop-resource-id", "prod_1"),
            ]
        );
        let public = IdentityHeaders { access_level: None, resource_id: None, ..granted.clone() };
        assert_eq!(public.fields().count(), 2, "a public route names no level or resource");
        for headers in [&granted, &public] {
            let mut each = Vec::new();
            headers.each_field(|name, value| each.push((name, value.clone())));
            let fields: Vec<_> = headers.fields().map(|(n, v)| (n.as_str(), v.clone())).collect();
            assert_eq!(each, fields, "each_field writes what fields names, in its order");
        }
    }

    #[test]
    fn insert_replaces_what_is_there() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_WHOP_USER_ID, HeaderValue::from_static("user_forged"));
        granted().insert_into(&mut headers);
        assert_eq!(headers.get_all(&X_WHOP_USER_ID).iter().collect::<Vec<_>>(), ["user_1"]);
        assert_eq!(headers.len(), 4);
    }
}
