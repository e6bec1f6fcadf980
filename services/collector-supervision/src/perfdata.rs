//! Plugin output and performance data, as the Nagios plugin guidelines and
//! Icinga 2 write them:
//!
//! ```text
//! DISK OK - free space: / 3326 MB (56%) | '/ used'=2643MB;5948;5958;0;5968 time=0.01s
//! ```
//!
//! Each item is `label=value[UOM];[warn];[crit];[min];[max]`; a label with
//! spaces or `=` is single-quoted (a quote inside is doubled); `value` is a
//! number or `U` (undetermined); warn and crit are threshold ranges
//! (`10`, `10:`, `~:10`, `10:20`, `@10:20`); trailing empty fields may be left
//! out. [`parse_perfdata`] checks all of it and returns the items by label.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;

/// One performance data item.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfValue {
    /// `None` when the plugin wrote `U` (the value could not be determined).
    pub value: Option<f64>,
    /// Unit of measure as written (`s`, `ms`, `us`, `%`, `B`, `KB`, `MB`,
    /// `GB`, `TB`, `c`, Icinga's `KiB`, `degC`...); empty for a plain number.
    pub uom: String,
    pub warn: Option<String>,
    pub crit: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Why performance data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid performance data at {item:?}: {problem}")]
pub struct PerfdataError {
    pub item: String,
    pub problem: String,
}

fn number_and_uom() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)([A-Za-z%/]*)$").expect("valid regex")
    })
}

fn threshold() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    const NUM: &str = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?";
    RE.get_or_init(|| Regex::new(&format!(r"^@?(?:(?:~|{NUM})?:)?(?:{NUM})?$")).expect("valid regex"))
}

fn plain_number(field: &str, text: &str, item: &str) -> Result<Option<f64>, PerfdataError> {
    if text.is_empty() {
        return Ok(None);
    }
    // min and max may repeat the value's unit (some plugins write `0MB`).
    let caps = number_and_uom()
        .captures(text)
        .ok_or_else(|| PerfdataError { item: item.to_string(), problem: format!("{field} {text:?} is not a number") })?;
    caps[1]
        .parse::<f64>()
        .map(Some)
        .map_err(|_| PerfdataError { item: item.to_string(), problem: format!("{field} {text:?} is not a number") })
}

fn range(field: &str, text: &str, item: &str) -> Result<Option<String>, PerfdataError> {
    if text.is_empty() {
        return Ok(None);
    }
    if text == "@" || text == ":" || !threshold().is_match(text) {
        return Err(PerfdataError { item: item.to_string(), problem: format!("{field} {text:?} is not a threshold range") });
    }
    Ok(Some(text.to_string()))
}

/// Reads one label (quoted or not) at the start of `s`; returns it and the rest after `=`.
fn label(s: &str) -> Result<(String, &str), PerfdataError> {
    let err = |problem: &str| PerfdataError { item: s.chars().take(60).collect(), problem: problem.to_string() };
    if let Some(quoted) = s.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if quoted[i + 1..].starts_with('\'') {
                    out.push('\'');
                    chars.next();
                    continue;
                }
                let rest = &quoted[i + 1..];
                let rest = rest.strip_prefix('=').ok_or_else(|| err("a quoted label must be followed by '='"))?;
                if out.is_empty() {
                    return Err(err("empty label"));
                }
                return Ok((out, rest));
            }
            out.push(c);
        }
        Err(err("unterminated quoted label"))
    } else {
        let end = s.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(s.len());
        if !s[end..].starts_with('=') {
            return Err(err("expected label=value"));
        }
        if end == 0 {
            return Err(err("empty label"));
        }
        if s[..end].contains('\'') {
            return Err(err("a label with a quote must be quoted"));
        }
        Ok((s[..end].to_string(), &s[end + 1..]))
    }
}

/// Parses performance data (space-separated items) into a map by label. A
/// label given twice keeps its last value. Empty input gives an empty map.
pub fn parse_perfdata(text: &str) -> Result<BTreeMap<String, PerfValue>, PerfdataError> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (name, after) = label(rest)?;
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let fields_text = &after[..end];
        rest = after[end..].trim_start();
        let item = format!("{name}={fields_text}");
        let fields: Vec<&str> = fields_text.split(';').collect();
        if fields.len() > 5 {
            return Err(PerfdataError { item, problem: "more than 5 fields (value;warn;crit;min;max)".into() });
        }
        let first = fields[0];
        let (value, uom) = if first == "U" {
            (None, String::new())
        } else {
            let caps = number_and_uom().captures(first).ok_or_else(|| PerfdataError {
                item: item.clone(),
                problem: format!("value {first:?} is not a number with an optional unit, nor U"),
            })?;
            let value = caps[1]
                .parse::<f64>()
                .map_err(|_| PerfdataError { item: item.clone(), problem: format!("value {first:?} is not a number") })?;
            (Some(value), caps[2].to_string())
        };
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        let parsed = PerfValue {
            value,
            uom,
            warn: range("warn", field(1), &item)?,
            crit: range("crit", field(2), &item)?,
            min: plain_number("min", field(3), &item)?,
            max: plain_number("max", field(4), &item)?,
        };
        out.insert(name, parsed);
    }
    Ok(out)
}

/// Plugin output split into its text and its performance data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitOutput {
    /// The first line's text and the long text lines, without performance data.
    pub text: String,
    /// The performance data of every line, space-separated.
    pub perfdata: String,
}

/// Splits raw plugin output (as NRDP and plugins write it) into text and
/// performance data: `TEXT | PERFDATA` on the first line, then long text,
/// then optionally `| PERFDATA` continuing to the end.
pub fn split_plugin_output(raw: &str) -> SplitOutput {
    let mut lines = raw.lines();
    let first = lines.next().unwrap_or("");
    let (short, mut perf) = match first.split_once('|') {
        Some((t, p)) => (t.trim_end().to_string(), vec![p.trim().to_string()]),
        None => (first.trim_end().to_string(), Vec::new()),
    };
    let mut long = Vec::new();
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf.push(line.trim().to_string());
        } else if let Some((t, p)) = line.split_once('|') {
            long.push(t.trim_end().to_string());
            perf.push(p.trim().to_string());
            in_perf = true;
        } else {
            long.push(line.to_string());
        }
    }
    while long.last().is_some_and(|l| l.trim().is_empty()) {
        long.pop();
    }
    let mut text = short;
    for l in long {
        text.push('\n');
        text.push_str(&l);
    }
    SplitOutput { text, perfdata: perf.into_iter().filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_units_and_thresholds() {
        let p = parse_perfdata("time=0.012s;1;2;0;10 size=2643MB;5948;5958;0;5968 load1=0.25;~:5;@10:20 count=3c").unwrap();
        assert_eq!(
            p["time"],
            PerfValue {
                value: Some(0.012),
                uom: "s".into(),
                warn: Some("1".into()),
                crit: Some("2".into()),
                min: Some(0.0),
                max: Some(10.0)
            }
        );
        assert_eq!(p["size"].uom, "MB");
        assert_eq!(p["size"].max, Some(5968.0));
        assert_eq!(p["load1"].warn.as_deref(), Some("~:5"));
        assert_eq!(p["load1"].crit.as_deref(), Some("@10:20"));
        assert_eq!((p["count"].value, p["count"].uom.as_str()), (Some(3.0), "c"));
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn percent_negative_exponent_and_undetermined() {
        let p = parse_perfdata("pl=0% rta=-1.5e-3ms temp=U;;;; free=.5GB;10:;20:").unwrap();
        assert_eq!((p["pl"].value, p["pl"].uom.as_str()), (Some(0.0), "%"));
        assert_eq!(p["rta"].value, Some(-0.0015));
        assert_eq!(p["temp"].value, None);
        assert_eq!(p["free"].value, Some(0.5));
        assert_eq!(p["free"].warn.as_deref(), Some("10:"));
    }

    #[test]
    fn quoted_labels_keep_spaces_equals_and_doubled_quotes() {
        let p = parse_perfdata("'/ used'=2643MB;5948;5958;0;5968 'a=b'=1 'it''s'=2 'C:\\ %'=45%").unwrap();
        assert_eq!(p["/ used"].value, Some(2643.0));
        assert_eq!(p["a=b"].value, Some(1.0));
        assert_eq!(p["it's"].value, Some(2.0));
        assert_eq!(p["C:\\ %"].uom, "%");
    }

    #[test]
    fn empty_input_is_an_empty_map() {
        assert!(parse_perfdata("").unwrap().is_empty());
        assert!(parse_perfdata("   ").unwrap().is_empty());
    }

    #[test]
    fn bad_items_are_refused_with_the_reason() {
        for (bad, why) in [
            ("novalue", "label=value"),
            ("x=abc", "not a number"),
            ("x=1,5", "not a number"),
            ("'open=1", "unterminated"),
            ("''=1", "empty label"),
            ("=1", "empty label"),
            ("x=1;2;3;4;5;6", "more than 5"),
            ("x=1;abc", "threshold"),
            ("x=1;;;zero", "min"),
            ("'q'x=1", "followed by '='"),
        ] {
            let e = parse_perfdata(bad).unwrap_err();
            assert!(e.problem.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn output_is_split_from_perfdata_on_the_first_and_later_lines() {
        let s = split_plugin_output("DISK OK - free 56% | '/ used'=2643MB;5948\nline two\nline three | time=1s\nsize=2B");
        assert_eq!(s.text, "DISK OK - free 56%\nline two\nline three");
        assert_eq!(s.perfdata, "'/ used'=2643MB;5948 time=1s size=2B");
        let s = split_plugin_output("OK: all good");
        assert_eq!((s.text.as_str(), s.perfdata.as_str()), ("OK: all good", ""));
        let s = split_plugin_output("OK|");
        assert_eq!((s.text.as_str(), s.perfdata.as_str()), ("OK", ""));
    }
}
