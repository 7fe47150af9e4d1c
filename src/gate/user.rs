//! [`WhopUser`]: who the gate let in, for the app behind it.

use std::sync::Arc;

use crate::identity::Source;
use crate::whop::Access;

/// The caller of an allowed request, in the request's extensions (and, with the `axum` feature,
/// an axum extractor).
///
/// Present on every request the gate forwarded with an identity: always on protected routes, on
/// public routes only when the caller sent a valid credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhopUser {
    /// The Whop user id (`user_…`).
    pub id: Arc<str>,
    /// How the caller was identified.
    pub source: Source,
    /// What they hold on [`WhopUser::resource`]; `None` on public routes (nothing was checked)
    /// and when a route let them in with Whop unavailable (`on_whop_error = "allow"`).
    pub access_level: Option<Access>,
    /// The required resource that granted access.
    pub resource: Option<Arc<str>>,
    /// Display name, when known (sessions).
    pub name: Option<Arc<str>>,
    /// Email, when known (sessions).
    pub email: Option<Arc<str>>,
}

#[cfg(feature = "axum")]
mod extractor {
    use axum::extract::FromRequestParts;
    use axum::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::request::Parts;

    use super::WhopUser;

    /// Why a handler asking for a [`WhopUser`] got none: the route is not behind the gate (or is
    /// public and the caller anonymous). A programming error in the app, so a plain 500.
    #[derive(Debug, Clone, Copy)]
    pub struct MissingWhopUser;

    impl IntoResponse for MissingWhopUser {
        fn into_response(self) -> Response {
            (StatusCode::INTERNAL_SERVER_ERROR, "this route is not behind whopgate's GateLayer\n").into_response()
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for WhopUser {
        type Rejection = MissingWhopUser;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
            parts.extensions.get::<WhopUser>().cloned().ok_or(MissingWhopUser)
        }
    }

    impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for WhopUser {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<WhopUser>().cloned())
        }
    }
}

#[cfg(feature = "axum")]
pub use extractor::MissingWhopUser;
