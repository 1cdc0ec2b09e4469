//! Chat templates as transformers renders them: Jinja (via minijinja) with transformers' settings.
//!
//! transformers compiles a checkpoint's chat template in a sandboxed Jinja environment with
//! `trim_blocks` and `lstrip_blocks` on, the `loopcontrols` extension, a `tojson` filter that is plain
//! `json.dumps` (no HTML escaping) and the globals `raise_exception` and `strftime_now`; the rendering
//! context is the special-tokens map (`bos_token`, `eos_token`, ...) plus `messages`,
//! `add_generation_prompt` and any extra variables. [`ChatTemplate`] does the same.
//!
//! Templates are Python Jinja, so they call Python methods on the values they hold
//! (`content.startswith('<tool_response>')`, `text.split('</think>')[-1].lstrip('\n')`,
//! `tool.items()`...): minijinja-contrib's pycompat layer supplies the str, dict and list methods,
//! and values print as Python prints them (`None`, `True`, `False`).

use std::path::Path;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde_json::json;

use crate::ModelError;

const TEMPLATE_NAME: &str = "chat";

/// A compiled chat template.
///
/// # Example
/// ```
/// use vidlm_models::chat_template::ChatTemplate;
/// let t = ChatTemplate::new("{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}").unwrap();
/// let messages = serde_json::json!([{"role": "user", "content": "hi"}]);
/// assert_eq!(t.render(&messages, false, &serde_json::Map::new()).unwrap(), "User: hi\n");
/// ```
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] when the template does not parse.
    pub fn new(source: &str) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Jinja's default, which transformers keeps: a template's final newline is dropped.
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| ModelError::Invalid(format!("chat template does not parse: {e:#}")))?;
        Ok(Self {
            env,
            source: source.to_owned(),
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` (a JSON array of `{"role", "content"}` objects, `content` a string or a
    /// list of `{"type": "text"|"image"|"video", ...}` parts). `extra` holds further variables (the
    /// special-tokens map, `tools`, ...); `messages` and `add_generation_prompt` win over them.
    ///
    /// # Errors
    /// [`ModelError::Input`] when rendering fails (a `raise_exception` in the template, an
    /// undefined operation...).
    pub fn render(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, ModelError> {
        let mut ctx = extra.clone();
        ctx.insert("messages".into(), messages.clone());
        ctx.insert("add_generation_prompt".into(), json!(add_generation_prompt));
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ModelError::Invalid(format!("chat template: {e}")))?;
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(|e| ModelError::Input(format!("chat template rendering failed: {e:#}")))
    }
}

/// Finds a checkpoint's chat template the way transformers 5 does for a processor: a
/// `chat_template.jinja` file, else `chat_template.json` (`{"chat_template": ...}`), else the
/// `chat_template` key of `processor_config.json`, else of `tokenizer_config.json`. A template given
/// as a list of named templates (`[{"name": "default", "template": ...}]`) yields the one named
/// `default`. `Ok(None)` when the directory has none.
///
/// # Errors
/// [`ModelError::File`] when one of those files exists but cannot be read or parsed.
pub fn find_chat_template(dir: &Path) -> Result<Option<String>, ModelError> {
    crate::Checkpoint::new(dir).chat_template()
}

/// Prints values as Python's `str()` does where it differs from minijinja: `None`, `True`, `False`
/// (an undefined value still prints nothing, as in Jinja).
fn python_formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &Value,
) -> Result<(), Error> {
    let py = match value.kind() {
        ValueKind::None => "None",
        ValueKind::Bool if value.is_true() => "True",
        ValueKind::Bool => "False",
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(py).map_err(Error::from)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)` as
/// transformers' override of `tojson`: Python's separators (`", "` and `": "`), no HTML escaping.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let _ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(usize::try_from(v)?),
    };
    let (item_sep, key_sep) = match separators {
        Some(s) if !s.is_none() => {
            let a = s.get_item(&Value::from(0))?;
            let b = s.get_item(&Value::from(1))?;
            (a.to_string(), b.to_string())
        }
        // Python's default: "," when indenting (lines end there), ", " otherwise.
        _ => (
            if indent.is_some() { "," } else { ", " }.to_string(),
            ": ".to_string(),
        ),
    };
    let mut out = String::new();
    write_py_json(
        value,
        indent,
        0,
        &item_sep,
        &key_sep,
        sort_keys.unwrap_or(false),
        &mut out,
    )?;
    Ok(Value::from(out))
}

fn write_py_json(
    v: &Value,
    indent: Option<usize>,
    level: usize,
    item_sep: &str,
    key_sep: &str,
    sort_keys: bool,
    out: &mut String,
) -> Result<(), Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(v.clone()) {
                out.push_str(&i.to_string());
            } else {
                let f = f64::try_from(v.clone())?;
                out.push_str(&py_float(f));
            }
        }
        ValueKind::String => {
            out.push_str(&serde_json::to_string(v.as_str().unwrap_or_default()).unwrap_or_default())
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_py_json(item, indent, level + 1, item_sep, key_sep, sort_keys, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                let ks = match k.as_str() {
                    Some(s) => s.to_owned(),
                    None => k.to_string(),
                };
                out.push_str(&serde_json::to_string(&ks).unwrap_or_default());
                out.push_str(key_sep);
                write_py_json(
                    &v.get_item(k)?,
                    indent,
                    level + 1,
                    item_sep,
                    key_sep,
                    sort_keys,
                    out,
                )?;
            }
            newline(out, level);
            out.push('}');
        }
        _ => out.push_str(&serde_json::to_string(&v.to_string()).unwrap_or_default()),
    }
    Ok(())
}

/// Python's `repr(float)` for the values JSON can hold (shortest round-trip, always with a `.` or
/// an exponent).
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let s = format!("{f:?}");
    if s.contains('e') {
        // Rust writes 1e20 / 1e-7; Python writes 1e+20 / 1e-07.
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match e.strip_prefix('-') {
            Some(d) => ("-", d),
            None => ("+", e),
        };
        return format!("{m}e{sign}{digits:0>2}");
    }
    s
}

/// `strftime_now(format)`: the current UTC time formatted with the common strftime directives
/// (%Y %m %d %H %M %S %y %B %b %A %a %j %p %I %%).
fn strftime_now(format: String) -> Result<Value, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(Value::from(strftime(secs, &format)))
}

fn strftime(unix: i64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix.div_euclid(86_400);
    let rem = unix.rem_euclid(86_400);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let d = doy_mar - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(m - 1) as usize] + d + i64::from(leap && m > 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", if hh % 12 == 0 { 12 } else { hh % 12 })),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('B') => out.push_str(MONTHS[(m - 1) as usize]),
            Some('b') => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        assert_eq!(
            strftime(1_709_211_909, "%Y-%m-%d %H:%M:%S %A %b %j"),
            "2024-02-29 13:05:09 Thursday Feb 060"
        );
        assert_eq!(strftime(0, "%d %B %Y %I%p %%"), "01 January 1970 12AM %");
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let t = ChatTemplate::new("{{ x | tojson }}|{{ x | tojson(indent=2) }}").unwrap();
        let mut extra = serde_json::Map::new();
        extra.insert("x".into(), json!({"a": [1, 2.5, "<b>"], "c": null}));
        let got = t.render(&json!([]), false, &extra).unwrap();
        assert_eq!(
            got,
            "{\"a\": [1, 2.5, \"<b>\"], \"c\": null}|{\n  \"a\": [\n    1,\n    2.5,\n    \"<b>\"\n  ],\n  \"c\": null\n}"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}").unwrap();
        let err = t
            .render(&json!([]), false, &serde_json::Map::new())
            .unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
    }

    #[test]
    fn trim_and_lstrip_blocks_as_transformers() {
        let t = ChatTemplate::new("{% for m in messages %}\n    {{ m }}\n{% endfor %}\n").unwrap();
        assert_eq!(
            t.render(&json!(["a", "b"]), false, &serde_json::Map::new())
                .unwrap(),
            "    a\n    b\n"
        );
    }

    #[test]
    fn python_methods_and_values() {
        let t = ChatTemplate::new(
            "{{ s.startswith('<a>') }} {{ s.split('|')[-1].strip() }} {{ s.upper() }} \
             {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.get('x', 'dflt') }} \
             {{ none_value }} {{ s.replace('|', '/') }}",
        )
        .unwrap();
        let mut extra = serde_json::Map::new();
        extra.insert("s".into(), json!("<a>| b "));
        extra.insert("d".into(), json!({"k": 1}));
        extra.insert("none_value".into(), json!(null));
        let got = t.render(&json!([]), false, &extra).unwrap();
        assert_eq!(got, "True b <A>| B  k=1; dflt None <a>/ b ");
    }

    #[test]
    fn loop_controls() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m == 'skip' %}{% continue %}{% endif %}\
             {% if m == 'stop' %}{% break %}{% endif %}{{ m }}{% endfor %}",
        )
        .unwrap();
        let got = t
            .render(
                &json!(["a", "skip", "b", "stop", "c"]),
                false,
                &serde_json::Map::new(),
            )
            .unwrap();
        assert_eq!(got, "ab");
    }

    #[test]
    fn bad_template_is_a_clear_error() {
        let err = ChatTemplate::new("{% for %}").unwrap_err();
        assert!(err.to_string().contains("chat template"), "{err}");
    }
}
