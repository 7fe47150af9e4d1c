//! The hand-off: how a request the gate cleared reaches the service behind it, with who is
//! calling.
//!
//! The gate decides; a [`Handoff`] delivers. The default, [`InsertIdentity`], puts the identity
//! headers into the request's header map (and a [`WhopUser`] into its extensions), which any
//! service can read. The sidecar's proxy copies them straight into the upstream request head
//! as lines made once per caller ([`UserHeaders`]) and per grant: four header-map inserts (each
//! a hash of the name, a probe and sometimes a regrowth), then four lines formatted per request,
//! were most of what a gated request cost over a public one.

use std::sync::Arc;

use http::Request;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tower_service::Service;

use super::user::WhopUser;
use crate::identity::Source;
use crate::per_core::own_copy;
use crate::whop::Access;

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

/// Two identity headers made once: their values, and the header lines the proxy copies into an
/// upstream request head as they are (formatting four lines per request was most of what the
/// hand-off cost).
#[derive(Debug, PartialEq, Eq)]
struct Rendered {
    values: [HeaderValue; 2],
    lines: Box<[u8]>,
}

impl Rendered {
    fn new(names: [&'static HeaderName; 2], values: [HeaderValue; 2]) -> Arc<Self> {
        let mut lines = Vec::new();
        for (name, value) in names.iter().zip(&values) {
            lines.extend_from_slice(name.as_str().as_bytes());
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        Arc::new(Self { values, lines: lines.into_boxed_slice() })
    }
}

/// `x-whop-user-id` and `x-whopgate-source` of one caller, made once per identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserHeaders(Arc<Rendered>);

impl UserHeaders {
    const NAMES: [&'static HeaderName; 2] = [&X_WHOP_USER_ID, &X_WHOPGATE_SOURCE];

    /// The headers of `user_id` identified by `source`.
    pub(crate) fn new(user_id: HeaderValue, source: Source) -> Self {
        Self(Rendered::new(Self::NAMES, [user_id, source.header_value()]))
    }

    /// The `x-whop-user-id` value.
    #[cfg(test)]
    pub(crate) fn user_id(&self) -> &HeaderValue {
        &self.0.values[0]
    }

    /// A copy that shares no allocation with `self` (for a per-thread identity: the reference
    /// count each request bumps is then written by one core only).
    pub(crate) fn unshared(&self) -> Self {
        Self(Arc::new(Rendered {
            values: [own_copy(&self.0.values[0]), self.0.values[1].clone()],
            lines: self.0.lines.clone(),
        }))
    }
}

/// `x-whop-access-level` and `x-whop-resource-id` of one grant, made once per rule resource and
/// level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrantHeaders(Arc<Rendered>);

impl GrantHeaders {
    const NAMES: [&'static HeaderName; 2] = [&X_WHOP_ACCESS_LEVEL, &X_WHOP_RESOURCE_ID];

    /// The headers of `access` to `resource_id`.
    pub(crate) fn new(access: Access, resource_id: HeaderValue) -> Self {
        Self(Rendered::new(Self::NAMES, [access.header_value(), resource_id]))
    }
}

/// A rule resource's [`GrantHeaders`] for each level that can be granted.
#[derive(Debug, Clone)]
pub(crate) struct Grants {
    customer: GrantHeaders,
    admin: GrantHeaders,
}

impl Grants {
    /// Both levels' headers for `resource_id`.
    pub(crate) fn new(resource_id: &HeaderValue) -> Self {
        Self {
            customer: GrantHeaders::new(Access::Customer, own_copy(resource_id)),
            admin: GrantHeaders::new(Access::Admin, own_copy(resource_id)),
        }
    }

    /// The headers of a grant of `access`; `None` for no access, which grants nothing.
    pub(crate) fn of(&self, access: Access) -> Option<&GrantHeaders> {
        match access {
            Access::Customer => Some(&self.customer),
            Access::Admin => Some(&self.admin),
            Access::NoAccess => None,
        }
    }
}

/// The identity headers of one cleared request (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    user: UserHeaders,
    grant: Option<GrantHeaders>,
}

impl IdentityHeaders {
    /// `user`'s headers, and `grant`'s when a required resource granted access.
    pub(crate) fn new(user: UserHeaders, grant: Option<GrantHeaders>) -> Self {
        Self { user, grant }
    }

    /// The headers as `(name, value)` pairs: user id and source always, access level and
    /// resource id when a required resource granted access.
    pub fn fields(&self) -> impl Iterator<Item = (&'static HeaderName, &HeaderValue)> {
        let user = UserHeaders::NAMES.into_iter().zip(&self.user.0.values);
        let grant = self.grant.iter().flat_map(|g| GrantHeaders::NAMES.into_iter().zip(&g.0.values));
        user.chain(grant)
    }

    /// The headers as the lines of a request head (`name: value\r\n` each), in the order of
    /// [`IdentityHeaders::fields`]: the user's, then the grant's (empty without one).
    pub(crate) fn lines(&self) -> [&[u8]; 2] {
        [&self.user.0.lines, self.grant.as_ref().map_or(&[][..], |g| &g.0.lines)]
    }

    /// Puts the headers into `headers`, replacing any of the same name.
    pub fn insert_into(self, headers: &mut HeaderMap) {
        for (name, value) in self.fields() {
            headers.insert(name, value.clone());
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
        IdentityHeaders::new(
            UserHeaders::new(HeaderValue::from_static("user_1"), Source::UserToken),
            Some(GrantHeaders::new(Access::Customer, HeaderValue::from_static("prod_1"))),
        )
    }

    /// A head's added lines, as the proxy writes them.
    fn written(headers: &IdentityHeaders) -> String {
        headers.lines().concat().iter().map(|&b| char::from(b)).collect()
    }

    #[test]
    fn fields_name_every_header_in_order_and_the_lines_say_the_same() {
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
        let public = IdentityHeaders::new(granted.user.clone(), None);
        assert_eq!(public.fields().count(), 2, "a public route names no level or resource");
        let admin = IdentityHeaders::new(
            granted.user.unshared(),
            Grants::new(&HeaderValue::from_static("prod_2")).of(Access::Admin).cloned(),
        );
        for headers in [&granted, &public, &admin] {
            let lines: String =
                headers.fields().map(|(n, v)| format!("{}: {}\r\n", n, v.to_str().unwrap_or("?"))).collect();
            assert_eq!(written(headers), lines, "the lines say what fields names, in its order");
        }
        assert!(written(&admin).ends_with("x-whop-access-level: admin\r\nx-whop-resource-id: prod_2\r\n"));
        assert!(Grants::new(&HeaderValue::from_static("prod_2")).of(Access::NoAccess).is_none());
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
