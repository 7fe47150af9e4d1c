//! Property tests of the config reader: whatever the file says, the reader answers with a
//! config or with errors that each point at a line of the file; it never panics.

use proptest::prelude::*;

use super::Config;

/// Lines that make up configs: valid keys and tables, their values of the wrong type, unknown
/// keys, `${VAR}`s set and unset, and lines that are not TOML at all.
fn line() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "[whop]",
        "[[route]]",
        "[identity]",
        "[identity.session]",
        "[identity.user_token]",
        "[identity.license_key]",
        "[identity.dev]",
        "[cache]",
        "[limits]",
        "[webhook]",
        "[mirror]",
        "[bogus]",
        "[[whop]]",
        "[route]",
        "listen = \"127.0.0.1:8080\"",
        "listen = 8080",
        "upstream = \"http://127.0.0.1:3000\"",
        "upstream = \"ftp://x\"",
        "admin_listen = \"localhost:9\"",
        "public_url = \"https://app.example\"",
        "prefix = \"/.whopgate\"",
        "prefix = \"nope\"",
        "trusted_proxies = [\"10.0.0.0/8\", \"x\"]",
        "upstream_timeout = \"30s\"",
        "upstream_timeout = \"forever\"",
        "app_id = \"app_xxxxxxxxxxxxxx\"",
        "api_key = \"${WHOP_API_KEY}\"",
        "api_key = \"${UNSET_FOR_SURE}\"",
        "access_api = \"members\"",
        "access_api = 3",
        "rate_limit_per_minute = -1",
        "timeout = \"0s\"",
        "sources = [\"user_token\", \"session\", \"dev\", \"nope\"]",
        "sources = []",
        "cookie_secret = \"short\"",
        "client_id = \"app_xxxxxxxxxxxxxx\"",
        "user_id = \"user_dev\"",
        "access_level = \"admin\"",
        "access_level = \"owner\"",
        "path = \"/\"",
        "path = \"/api\"",
        "path = \"api\"",
        "path = \"/a/../b\"",
        "public = true",
        "public = \"yes\"",
        "require = [\"prod_aaaaaaaaaaaaaa\"]",
        "require = [\"nope\"]",
        "require = []",
        "methods = [\"GET\", \"BREW\"]",
        "host = \"admin.example:443\"",
        "host = \"*.example.com\"",
        "mode = \"api\"",
        "on_whop_error = \"allow\"",
        "checkout_url = \"javascript:alert(1)\"",
        "ttl = \"60s\"",
        "max_entries = 0",
        "redis_url = \"redis://127.0.0.1:6379\"",
        "typo_key = 1",
        "= missing key",
        "key = ",
        "\"unterminated = 1",
        "a.b.c = { x = 1 }",
        "x = [1, \"mixed\"]",
        "# a comment",
        "",
    ])
    .prop_map(str::to_owned);
    prop_oneof![9 => fixed, 1 => "[ -~]{0,30}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_file_gives_a_config_or_errors_with_a_line(lines in prop::collection::vec(line(), 0..30)) {
        let text = lines.join("\n");
        let line_count = u32::try_from(text.lines().count().max(1)).unwrap_or(u32::MAX);
        let env = |name: &str| (name == "WHOP_API_KEY").then(|| "key".to_owned());
        if let Err(errors) = Config::from_toml_with_env(&text, "f.toml", &env) {
            prop_assert!(!errors.is_empty(), "an Err without errors for:\n{}", text);
            for error in errors.iter() {
                prop_assert!(
                    error.line >= 1 && error.line <= line_count + 1,
                    "no line in the file for {:?} (file has {} lines):\n{}", error, line_count, text
                );
                let place = format!("f.toml:{}:", error.line);
                prop_assert!(error.to_string().starts_with(&place), "{}", error);
            }
        }
    }
}
