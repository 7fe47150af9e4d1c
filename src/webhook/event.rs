//! What a (verified) delivery says: its type, and whose access it may have changed (SPEC §1).

use serde_json::Value;

/// The event types after which a user's cached access may be wrong (SPEC §1).
pub const ACCESS_RELEVANT: &[&str] = &[
    "membership.activated",
    "membership.deactivated",
    "membership.updated",
    "membership.cancel_at_period_end_changed",
    "payment.succeeded",
    "refund.created",
    "dispute.created",
    // Legacy (v5) actions.
    "membership.went_valid",
    "membership.went_invalid",
];

/// A delivery, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Access may have changed for the user this names, or (when the body names no user) for
    /// the holder of this membership.
    AccessChanged {
        /// `type` (current) or `action` (legacy).
        kind: String,
        /// The user, when the body names one.
        user: Option<String>,
        /// The membership, when the body names one.
        membership: Option<String>,
    },
    /// An event that does not touch access: acknowledged and ignored.
    Other {
        /// Its type.
        kind: String,
    },
}

/// Why a verified body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Reads a delivery's body: `{type, data}` (current) or `{action, data}` (legacy).
pub fn parse(body: &[u8]) -> Result<Event, Malformed> {
    let value: Value = serde_json::from_slice(body).map_err(|_| Malformed("the body is not JSON"))?;
    let object = value.as_object().ok_or(Malformed("the body is not a JSON object"))?;
    let kind = object
        .get("type")
        .or_else(|| object.get("action"))
        .and_then(Value::as_str)
        .ok_or(Malformed("the body has no \"type\" (or legacy \"action\")"))?;
    if !ACCESS_RELEVANT.contains(&kind) {
        return Ok(Event::Other { kind: kind.to_owned() });
    }
    let data = object.get("data").filter(|d| d.is_object()).ok_or(Malformed("the body has no \"data\" object"))?;
    let user = id_at(data, "user").or_else(|| id_field(data, "user_id"));
    // A membership event's data is the membership itself; a payment's names its membership.
    let membership = if kind.starts_with("membership.") {
        id_field(data, "id")
            .filter(|id| id.starts_with("mem_"))
            .or_else(|| id_at(data, "membership"))
            .or_else(|| id_field(data, "membership_id"))
    } else {
        id_at(data, "membership").or_else(|| id_field(data, "membership_id"))
    };
    let user = user.filter(|id| id.starts_with("user_"));
    if user.is_none() && membership.is_none() {
        return Err(Malformed("the event names neither a user nor a membership"));
    }
    Ok(Event::AccessChanged { kind: kind.to_owned(), user, membership })
}

/// `data[key]` as an id: a string, or an object's `id` (`data.user` may be null in v1).
fn id_at(data: &Value, key: &str) -> Option<String> {
    match data.get(key)? {
        Value::String(_) => id_field(data, key),
        nested @ Value::Object(_) => id_field(nested, "id"),
        _ => None,
    }
}

/// `object[key]` when it is a plausible Whop id (letters, digits, `_`, at most 128 bytes).
fn id_field(object: &Value, key: &str) -> Option<String> {
    let id = object.get(key)?.as_str()?;
    let plausible = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plausible.then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(user: Option<&str>, membership: Option<&str>, kind: &str) -> Event {
        Event::AccessChanged { kind: kind.into(), user: user.map(Into::into), membership: membership.map(Into::into) }
    }

    #[test]
    fn every_shape_whop_sends_names_its_user() {
        let v1_nested = br#"{"id":"evt_1","type":"membership.deactivated","api_version":"v1","data":{"id":"mem_1","user":{"id":"user_a","username":"a"}}}"#;
        assert_eq!(parse(v1_nested), Ok(changed(Some("user_a"), Some("mem_1"), "membership.deactivated")));
        let flat = br#"{"type":"membership.activated","data":{"id":"mem_2","user_id":"user_b"}}"#;
        assert_eq!(parse(flat), Ok(changed(Some("user_b"), Some("mem_2"), "membership.activated")));
        let legacy =
            br#"{"api_version":"v5","action":"membership.went_invalid","data":{"id":"mem_3","user":"user_c"}}"#;
        assert_eq!(parse(legacy), Ok(changed(Some("user_c"), Some("mem_3"), "membership.went_invalid")));
        let payment =
            br#"{"type":"payment.succeeded","data":{"id":"pay_1","user":{"id":"user_d"},"membership":{"id":"mem_4"}}}"#;
        assert_eq!(parse(payment), Ok(changed(Some("user_d"), Some("mem_4"), "payment.succeeded")));
    }

    #[test]
    fn a_null_user_leaves_the_membership_to_look_up() {
        let body = br#"{"type":"membership.deactivated","data":{"id":"mem_1","user":null}}"#;
        assert_eq!(parse(body), Ok(changed(None, Some("mem_1"), "membership.deactivated")));
        let refund = br#"{"type":"refund.created","data":{"id":"rfnd_1","membership_id":"mem_9"}}"#;
        assert_eq!(parse(refund), Ok(changed(None, Some("mem_9"), "refund.created")));
    }

    #[test]
    fn other_events_are_ignored_and_bad_bodies_malformed() {
        assert_eq!(parse(br#"{"type":"invoice.paid","data":{}}"#), Ok(Event::Other { kind: "invoice.paid".into() }));
        for body in [
            &b"not json"[..],
            br#"[1,2]"#,
            br#"{"data":{}}"#,
            br#"{"type":"membership.deactivated"}"#,
            br#"{"type":"membership.deactivated","data":{"id":"pay_1","user":{"id":"not a user"}}}"#,
            br#"{"type":"membership.deactivated","data":{"user":{"id":"user_../x"}}}"#,
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
