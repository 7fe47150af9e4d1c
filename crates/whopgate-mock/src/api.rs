//! The Whop-shaped endpoints (SPEC §1): routing, and the JSON each answers from the state.
//! Faults, counting and API-key checks happen around these, in `server.rs`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use http::Method;
use serde_json::{Value, json};

use super::error::MockError;
use super::http::{Query, Reply, percent_decode};
use super::keys::KeyRing;
use super::state::{AccessLevel, ApiKey, Membership, MembershipShape, MembershipStatus, MockState, User};

/// The kinds of endpoint that calls are counted by and faults are set for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EndpointKind {
    /// `GET /api/v1/users/{user_id}/access/{resource_id}`
    Access,
    /// `GET /api/v1/memberships/{id or license key}`
    Membership,
    /// `GET /.well-known/jwks.json`
    Jwks,
    /// `GET /api/v1/members`
    Members,
    /// `GET /api/v2/memberships`
    MembershipsV2,
    /// `GET /api/v5/company/memberships`
    MembershipsV5,
    /// `GET /oauth/authorize`
    OauthAuthorize,
    /// `POST /oauth/token`
    OauthToken,
    /// `GET|POST /oauth/userinfo`
    OauthUserinfo,
}

impl EndpointKind {
    /// Every kind.
    pub const ALL: [EndpointKind; 9] = [
        EndpointKind::Access,
        EndpointKind::Membership,
        EndpointKind::Jwks,
        EndpointKind::Members,
        EndpointKind::MembershipsV2,
        EndpointKind::MembershipsV5,
        EndpointKind::OauthAuthorize,
        EndpointKind::OauthToken,
        EndpointKind::OauthUserinfo,
    ];

    /// The wire name: `access`, `membership`, `jwks`, `members`, `memberships_v2`,
    /// `memberships_v5`, `oauth_authorize`, `oauth_token`, `oauth_userinfo`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Access => "access",
            EndpointKind::Membership => "membership",
            EndpointKind::Jwks => "jwks",
            EndpointKind::Members => "members",
            EndpointKind::MembershipsV2 => "memberships_v2",
            EndpointKind::MembershipsV5 => "memberships_v5",
            EndpointKind::OauthAuthorize => "oauth_authorize",
            EndpointKind::OauthToken => "oauth_token",
            EndpointKind::OauthUserinfo => "oauth_userinfo",
        }
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EndpointKind {
    type Err = MockError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EndpointKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            MockError::BadRequest(format!(
                "unknown endpoint {s:?} (expected all, {})",
                EndpointKind::ALL.map(|k| k.as_str()).join(", ")
            ))
        })
    }
}

/// A recognised request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Access {
        user: String,
        resource: String,
    },
    Membership {
        id: String,
    },
    Jwks,
    Members,
    MembershipsV2,
    MembershipsV5,
    /// Answered by `oauth.rs`, not by [`answer`]; not under `/api/` and without an API key.
    OAuth(OAuthEndpoint),
}

/// The "Sign in with Whop" endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OAuthEndpoint {
    Authorize,
    Token,
    Userinfo,
}

impl Route {
    pub(crate) fn kind(&self) -> EndpointKind {
        match self {
            Route::Access { .. } => EndpointKind::Access,
            Route::Membership { .. } => EndpointKind::Membership,
            Route::Jwks => EndpointKind::Jwks,
            Route::Members => EndpointKind::Members,
            Route::MembershipsV2 => EndpointKind::MembershipsV2,
            Route::MembershipsV5 => EndpointKind::MembershipsV5,
            Route::OAuth(OAuthEndpoint::Authorize) => EndpointKind::OauthAuthorize,
            Route::OAuth(OAuthEndpoint::Token) => EndpointKind::OauthToken,
            Route::OAuth(OAuthEndpoint::Userinfo) => EndpointKind::OauthUserinfo,
        }
    }

    /// Everything under `/api/` needs `Authorization: Bearer <API key>`.
    pub(crate) fn needs_api_key(&self) -> bool {
        !matches!(self, Route::Jwks | Route::OAuth(_))
    }
}

/// Recognises a Whop-shaped request; `None` for anything else (then 401/404 in `server.rs`).
/// Paths are matched exactly (no trailing-slash leniency: a client bug should show).
pub(crate) fn route(method: &Method, path: &str) -> Option<Route> {
    // OpenID Connect wants userinfo to take POST as well as GET.
    match (path, method) {
        ("/oauth/authorize", &Method::GET) => return Some(Route::OAuth(OAuthEndpoint::Authorize)),
        ("/oauth/token", &Method::POST) => return Some(Route::OAuth(OAuthEndpoint::Token)),
        ("/oauth/userinfo", &Method::GET | &Method::POST) => return Some(Route::OAuth(OAuthEndpoint::Userinfo)),
        _ if method != Method::GET => return None,
        _ => {}
    }
    let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let dec = |s: &str| percent_decode(s, false).filter(|d| !d.is_empty());
    match segs.as_slice() {
        [".well-known", "jwks.json"] => Some(Route::Jwks),
        ["api", "v1", "users", user, "access", resource] => {
            Some(Route::Access { user: dec(user)?, resource: dec(resource)? })
        }
        ["api", "v1", "memberships", id] => Some(Route::Membership { id: dec(id)? }),
        ["api", "v1", "members"] => Some(Route::Members),
        ["api", "v2", "memberships"] => Some(Route::MembershipsV2),
        ["api", "v5", "company", "memberships"] => Some(Route::MembershipsV5),
        _ => None,
    }
}

/// Answers a recognised request from the state. `caller` is the API key that was accepted
/// (`None` for the JWKS).
pub(crate) fn answer(
    state: &MockState,
    keys: &KeyRing,
    route: &Route,
    query: &Query,
    caller: Option<&ApiKey>,
) -> Reply {
    let scope = caller.and_then(|k| k.company_id.as_deref());
    let result = match route {
        Route::Jwks => Ok(Reply::ok(keys.jwks())),
        Route::Access { user, resource } => Ok(access(state, user, resource)),
        Route::Membership { id } => membership(state, id, query, scope),
        Route::Members => members(state, query, scope),
        Route::MembershipsV2 => memberships_v2(state, query, scope),
        Route::MembershipsV5 => memberships_v5(state, query, scope),
        // server.rs hands these to oauth.rs, which needs more than the state.
        Route::OAuth(_) => Err(Reply::not_found("OAuth endpoints are answered elsewhere")),
    };
    result.unwrap_or_else(|bad| bad)
}

fn access(state: &MockState, user: &str, resource: &str) -> Reply {
    if state.user(user).is_none() {
        return Reply::not_found(format!("User not found: {user}"));
    }
    match state.access_level(user, resource) {
        Some(level) => Reply::ok(json!({
            "has_access": level.has_access(),
            "access_level": level.as_str(),
        })),
        None => Reply::not_found(format!("Resource not found: {resource}")),
    }
}

/// Whether a company-scoped key may see a membership.
fn visible(state: &MockState, m: &Membership, scope: Option<&str>) -> bool {
    scope.is_none() || state.membership_company(m) == scope
}

fn membership(state: &MockState, id: &str, query: &Query, scope: Option<&str>) -> Result<Reply, Reply> {
    let shape = match query.get("mock_shape") {
        None => state.membership_shape,
        Some("flat") => MembershipShape::Flat,
        Some("nested") => MembershipShape::Nested,
        Some(other) => {
            return Err(Reply::bad_request(format!("mock_shape must be flat or nested, not {other:?}")));
        }
    };
    let m = state
        .membership(id)
        .filter(|m| visible(state, m, scope))
        .ok_or_else(|| Reply::not_found(format!("Membership not found: {id}")))?;
    Ok(Reply::ok(membership_v1(state, m, shape)))
}

fn unix_or_null(t: Option<i64>) -> Value {
    t.map_or(Value::Null, |t| json!(t))
}

/// Fields every membership shape shares.
fn membership_common(m: &Membership) -> serde_json::Map<String, Value> {
    let canceled_at = (m.status == MembershipStatus::Canceled).then(|| m.updated());
    let obj = json!({
        "id": m.id,
        "status": m.status.as_str(),
        "valid": m.status.is_valid(),
        "license_key": m.license_key,
        "quantity": 1,
        "created_at": m.created(),
        "updated_at": m.updated(),
        "expires_at": unix_or_null(m.expires_at),
        "renewal_period_start": unix_or_null(m.renewal_period_start),
        "renewal_period_end": unix_or_null(m.renewal_period_end),
        "cancel_at_period_end": m.status == MembershipStatus::Canceling,
        "canceled_at": unix_or_null(canceled_at),
        "manage_url": format!("https://whop.com/orders/{}/manage", m.id),
        "metadata": {},
    });
    match obj {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

fn user_json(state: &MockState, id: &str) -> Value {
    match state.users.iter().find(|u| u.id == id) {
        Some(u) => json!({ "id": u.id, "username": u.username, "name": u.name }),
        None => json!({ "id": id }),
    }
}

/// `GET /api/v1/memberships/{id}`: flat (`product_id`, `user_id`, …) or nested (`product.id`,
/// `user.id`, …).
fn membership_v1(state: &MockState, m: &Membership, shape: MembershipShape) -> Value {
    let mut obj = membership_common(m);
    let product = state.product(&m.product_id);
    let company_id = product.map(|p| p.company_id.clone());
    match shape {
        MembershipShape::Flat => {
            obj.insert("product_id".into(), json!(m.product_id));
            obj.insert("user_id".into(), json!(m.user_id));
            obj.insert("plan_id".into(), json!(m.plan()));
            obj.insert("company_id".into(), json!(company_id));
        }
        MembershipShape::Nested => {
            let title = product.map(|p| p.title.clone()).unwrap_or_default();
            obj.insert("product".into(), json!({ "id": m.product_id, "title": title }));
            obj.insert("user".into(), user_json(state, &m.user_id));
            obj.insert("plan".into(), json!({ "id": m.plan() }));
            let company = company_id.as_deref().and_then(|c| state.company(c));
            obj.insert("company".into(), json!(company.map(|c| json!({ "id": c.id, "title": c.title }))));
            obj.insert("member".into(), json!({ "id": member_id(&m.user_id) }));
        }
    }
    Value::Object(obj)
}

/// Member ids are derived from user ids so they stay the same across runs.
fn member_id(user_id: &str) -> String {
    format!("mber_{}", user_id.strip_prefix("user_").unwrap_or(user_id))
}

/// Most list endpoints take at most this many per page.
const MAX_PER: usize = 50;
const DEFAULT_PER: usize = 10;

fn uint_param(query: &Query, name: &str, default: usize) -> Result<usize, Reply> {
    match query.get(name) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Reply::bad_request(format!("{name} must be a non-negative integer, not {v:?}"))),
    }
}

fn bool_param(query: &Query, name: &str) -> Result<Option<bool>, Reply> {
    match query.get(name) {
        None | Some("") => Ok(None),
        Some("true") | Some("1") => Ok(Some(true)),
        Some("false") | Some("0") => Ok(Some(false)),
        Some(v) => Err(Reply::bad_request(format!("{name} must be true or false, not {v:?}"))),
    }
}

/// Page number (from 1) and page size (1..=50; larger asks are capped, as Whop does).
fn page_params(query: &Query) -> Result<(usize, usize), Reply> {
    let page = uint_param(query, "page", 1)?.max(1);
    let per = uint_param(query, "per", DEFAULT_PER)?.clamp(1, MAX_PER);
    Ok((page, per))
}

/// Memberships matching the legacy list filters, in state order. v5 has no user filter (Whop's
/// does not either): its `user_id` is ignored, as Whop ignores a parameter it does not know.
fn filtered<'a>(
    state: &'a MockState,
    query: &Query,
    scope: Option<&str>,
    default_valid: Option<bool>,
    by_user: bool,
) -> Result<Vec<&'a Membership>, Reply> {
    let valid = bool_param(query, "valid")?.or(default_valid);
    let status = match query.get("status") {
        None | Some("") => None,
        Some(s) => Some(s.parse::<MembershipStatus>().map_err(|e| Reply::bad_request(e.to_string()))?),
    };
    let user = query.get("user_id").filter(|s| by_user && !s.is_empty());
    let product = query.get("product_id").filter(|s| !s.is_empty());
    let plan = query.get("plan_id").filter(|s| !s.is_empty());
    Ok(state
        .memberships
        .iter()
        .filter(|m| visible(state, m, scope))
        .filter(|m| valid.is_none_or(|v| m.status.is_valid() == v))
        .filter(|m| status.is_none_or(|s| m.status == s))
        .filter(|m| user.is_none_or(|u| m.user_id == u))
        .filter(|m| product.is_none_or(|p| m.product_id == p))
        .filter(|m| plan.is_none_or(|p| m.plan() == p))
        .collect())
}

fn page_of<T: Copy>(items: &[T], page: usize, per: usize) -> (Vec<T>, usize) {
    let total_pages = items.len().div_ceil(per);
    let start = (page - 1).saturating_mul(per).min(items.len());
    let end = start.saturating_add(per).min(items.len());
    (items[start..end].to_vec(), total_pages)
}

fn email_of(state: &MockState, user_id: &str) -> Option<String> {
    state.users.iter().find(|u| u.id == user_id).and_then(|u| u.email.clone())
}

/// `GET /api/v2/memberships`: `product`, `user`, `plan` are ids (unexpanded), and the
/// pagination says `total_page`.
fn memberships_v2(state: &MockState, query: &Query, scope: Option<&str>) -> Result<Reply, Reply> {
    let (page, per) = page_params(query)?;
    let all = filtered(state, query, scope, None, true)?;
    let (items, total_pages) = page_of(&all, page, per);
    let data: Vec<Value> = items
        .into_iter()
        .map(|m| {
            let mut obj = membership_common(m);
            obj.insert("product".into(), json!(m.product_id));
            obj.insert("user".into(), json!(m.user_id));
            obj.insert("plan".into(), json!(m.plan()));
            obj.insert("email".into(), json!(email_of(state, &m.user_id)));
            obj.insert("promo_code".into(), Value::Null);
            Value::Object(obj)
        })
        .collect();
    Ok(Reply::ok(json!({
        "pagination": {
            "current_page": page,
            "total_page": total_pages,
            "total_count": all.len(),
        },
        "data": data,
    })))
}

/// `GET /api/v5/company/memberships`: `valid` defaults to true; no user filter; flat ids; the pagination says
/// `total_pages`, `next_page`, `prev_page`.
fn memberships_v5(state: &MockState, query: &Query, scope: Option<&str>) -> Result<Reply, Reply> {
    let (page, per) = page_params(query)?;
    let all = filtered(state, query, scope, Some(true), false)?;
    let (items, total_pages) = page_of(&all, page, per);
    let data: Vec<Value> = items
        .into_iter()
        .map(|m| {
            let mut obj = membership_common(m);
            obj.insert("product_id".into(), json!(m.product_id));
            obj.insert("user_id".into(), json!(m.user_id));
            obj.insert("plan_id".into(), json!(m.plan()));
            obj.insert("page_id".into(), json!(state.membership_company(m)));
            obj.insert("checkout_id".into(), Value::Null);
            obj.insert("affiliate_username".into(), Value::Null);
            obj.insert("company_buyer_id".into(), Value::Null);
            obj.insert("marketplace".into(), json!(false));
            Value::Object(obj)
        })
        .collect();
    let next = (page < total_pages).then_some(page + 1);
    let prev = (page > 1).then(|| page - 1);
    Ok(Reply::ok(json!({
        "pagination": {
            "current_page": page,
            "total_pages": total_pages,
            "next_page": next,
            "prev_page": prev,
            "total_count": all.len(),
        },
        "data": data,
    })))
}

fn iso(t: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `GET /api/v1/members?company_id=&user_ids[]=`: the company's members (its admins, users
/// with a membership on its products, users with an access override on it), filtered by
/// `user_ids[]`, all on one page.
fn members(state: &MockState, query: &Query, scope: Option<&str>) -> Result<Reply, Reply> {
    let company_id = match query.get("company_id").filter(|c| !c.is_empty()) {
        Some(c) => c,
        None => {
            scope.ok_or_else(|| Reply::bad_request("company_id is required (this API key belongs to no company)"))?
        }
    };
    let company =
        state.company(company_id).ok_or_else(|| Reply::not_found(format!("Company not found: {company_id}")))?;
    let wanted = query.all(&["user_ids[]", "user_ids"]);
    let data: Vec<Value> = state
        .users
        .iter()
        .filter(|u| wanted.is_empty() || wanted.contains(&u.id.as_str()))
        .filter_map(|u| member_json(state, &company.id, u))
        .collect();
    Ok(Reply::ok(json!({
        "data": data,
        "page_info": {
            "end_cursor": null,
            "start_cursor": null,
            "has_next_page": false,
            "has_previous_page": false,
        },
    })))
}

fn member_json(state: &MockState, company_id: &str, u: &User) -> Option<Value> {
    let memberships: Vec<&Membership> = state
        .memberships
        .iter()
        .filter(|m| m.user_id == u.id && state.membership_company(m) == Some(company_id))
        .collect();
    let is_admin = state.company(company_id).is_some_and(|c| c.admins.contains(&u.id));
    let has_override = state.access.iter().any(|g| g.user_id == u.id && g.resource_id == company_id);
    if memberships.is_empty() && !is_admin && !has_override {
        return None;
    }
    let level = state.access_level(&u.id, company_id).unwrap_or(AccessLevel::NoAccess);
    let status = if level.has_access() {
        "joined"
    } else if !memberships.is_empty() && memberships.iter().all(|m| m.status == MembershipStatus::Drafted) {
        "drafted"
    } else {
        "left"
    };
    let created = memberships.iter().map(|m| m.created()).min().unwrap_or(super::state::DEFAULT_CREATED_AT);
    let updated = memberships.iter().map(|m| m.updated()).max().unwrap_or(created);
    Some(json!({
        "id": member_id(&u.id),
        "access_level": level.as_str(),
        "status": status,
        "user": {
            "id": u.id,
            "username": u.username,
            "name": u.name,
            "email": u.email,
        },
        "company_token_balance": 0,
        "created_at": iso(created),
        "joined_at": iso(created),
        "updated_at": iso(updated),
        "most_recent_action": null,
        "most_recent_action_at": null,
        "phone": null,
        "usd_total_spent": 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> MockState {
        MockState::default().resolve().unwrap()
    }

    fn get(path_and_query: &str) -> Reply {
        let s = state();
        let keys = KeyRing::new(&s).unwrap();
        let (path, q) = path_and_query.split_once('?').map_or((path_and_query, None), |(p, q)| (p, Some(q)));
        let r = route(&Method::GET, path).expect("route");
        answer(&s, &keys, &r, &Query::parse(q), Some(&s.api_keys[0]))
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::GET, "/api/v1/users/user_a%20b/access/prod_x"),
            Some(Route::Access { user: "user_a b".into(), resource: "prod_x".into() })
        );
        assert_eq!(route(&Method::POST, "/api/v1/members"), None);
        assert_eq!(route(&Method::GET, "/api/v1/members/"), None);
        assert_eq!(route(&Method::GET, "/api/v1/memberships/"), None);
        assert_eq!(route(&Method::GET, "/.well-known/jwks.json"), Some(Route::Jwks));
        assert!(!Route::Jwks.needs_api_key());
        assert!(Route::Members.needs_api_key());
        assert_eq!(route(&Method::POST, "/oauth/token"), Some(Route::OAuth(OAuthEndpoint::Token)));
        assert_eq!(route(&Method::GET, "/oauth/token"), None);
        assert_eq!(route(&Method::POST, "/oauth/authorize"), None);
        assert_eq!(route(&Method::POST, "/oauth/userinfo"), Some(Route::OAuth(OAuthEndpoint::Userinfo)));
        assert!(!Route::OAuth(OAuthEndpoint::Authorize).needs_api_key());
        for kind in EndpointKind::ALL {
            assert_eq!(kind.as_str().parse::<EndpointKind>().unwrap(), kind);
        }
    }

    #[test]
    fn access_answers() {
        let r = get("/api/v1/users/user_alice/access/prod_mockproduct1");
        assert_eq!(r.body, json!({"has_access": true, "access_level": "customer"}));
        let r = get("/api/v1/users/user_nobody/access/prod_mockproduct1");
        assert_eq!(r.status, 404);
        assert_eq!(r.body["error"]["type"], "not_found");
    }

    #[test]
    fn membership_by_license_key_and_shapes() {
        let flat = get("/api/v1/memberships/MOCK-ALICE-LICENSE").body;
        assert_eq!(flat["id"], "mem_alice00000001");
        assert_eq!(flat["product_id"], "prod_mockproduct1");
        assert_eq!(flat["user_id"], "user_alice");
        assert!(flat.get("product").is_none());
        let nested = get("/api/v1/memberships/mem_alice00000001?mock_shape=nested").body;
        assert_eq!(nested["product"]["id"], "prod_mockproduct1");
        assert_eq!(nested["user"]["id"], "user_alice");
        assert!(nested.get("product_id").is_none());
        assert_eq!(get("/api/v1/memberships/mem_x?mock_shape=weird").status, 400);
    }

    #[test]
    fn pagination_math() {
        let items: Vec<u32> = (1..=23).collect();
        assert_eq!(page_of(&items, 1, 10), ((1..=10).collect(), 3));
        assert_eq!(page_of(&items, 3, 10), (vec![21, 22, 23], 3));
        assert_eq!(page_of(&items, 4, 10), (vec![], 3));
        assert_eq!(page_of::<u32>(&[], 1, 10), (vec![], 0));
    }

    #[test]
    fn bad_list_params_are_400() {
        assert_eq!(get("/api/v2/memberships?page=abc").status, 400);
        assert_eq!(get("/api/v2/memberships?valid=maybe").status, 400);
        assert_eq!(get("/api/v5/company/memberships?status=paused").status, 400);
    }
}
