//! Nagios NRDP: `POST /nrdp/` with form fields `token`, `cmd=submitcheck`
//! and `XMLDATA` or `JSONDATA`:
//!
//! ```xml
//! <?xml version='1.0'?>
//! <checkresults>
//!   <checkresult type='service' checktype='1'>
//!     <hostname>dc01</hostname><servicename>backup</servicename>
//!     <state>2</state><output>CRITICAL - job failed|time=3s</output>
//!     <checktime>1768197603</checktime>   <!-- optional, Unix seconds -->
//!   </checkresult>
//! </checkresults>
//! ```
//!
//! ```json
//! {"checkresults":[{"checkresult":{"type":"service","checktype":"1"},
//!   "hostname":"dc01","servicename":"backup","state":"2","output":"CRITICAL - job failed|time=3s"}]}
//! ```
//!
//! `output` is plugin output: its performance data (after `|`) is split off.

use serde::Deserialize;
use serde_json::Value;

use crate::perfdata::split_plugin_output;
use crate::results::{status_of, unix_seconds, whole, Incoming, StateCode};

/// The form of an NRDP request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NrdpForm {
    /// The `token` field of the body.
    pub token: Option<String>,
    /// A `token` was in the query string: refused (URLs end up in proxy and
    /// access logs), never used.
    pub token_in_query: bool,
    pub cmd: Option<String>,
    pub xml: Option<String>,
    pub json: Option<String>,
}

/// Reads the form fields of an `application/x-www-form-urlencoded` body
/// (and of the query string, for clients that put them there, except the
/// token: one there is noted in `token_in_query`, not used).
pub fn parse_form(query: Option<&str>, body: &[u8]) -> NrdpForm {
    let mut form = NrdpForm::default();
    let query = form_urlencoded::parse(query.unwrap_or("").as_bytes()).map(|pair| (true, pair));
    let pairs = query.chain(form_urlencoded::parse(body).map(|pair| (false, pair)));
    for (in_query, (key, value)) in pairs {
        if in_query && key == "token" {
            form.token_in_query = true;
            continue;
        }
        let slot = match key.as_ref() {
            "token" => &mut form.token,
            "cmd" => &mut form.cmd,
            "XMLDATA" => &mut form.xml,
            "JSONDATA" => &mut form.json,
            _ => continue,
        };
        *slot = Some(value.into_owned());
    }
    form
}

/// One NRDP check result as written (states and times may be strings or numbers).
#[derive(Debug, Clone, PartialEq)]
struct RawResult {
    kind: String,
    hostname: String,
    servicename: Option<String>,
    state: String,
    output: String,
    checktime: Option<String>,
}

#[derive(Debug, Deserialize)]
struct XmlCheckResults {
    #[serde(rename = "checkresult", default)]
    results: Vec<XmlCheckResult>,
}

#[derive(Debug, Deserialize)]
struct XmlCheckResult {
    #[serde(rename = "@type")]
    kind: String,
    #[serde(rename = "@checktype", default)]
    _checktype: Option<String>,
    hostname: String,
    #[serde(default)]
    servicename: Option<String>,
    state: String,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    checktime: Option<String>,
}

/// Reads `XMLDATA`.
pub fn parse_xml(xml: &str) -> Result<Vec<Incoming>, String> {
    let root = xml.trim_start_matches('\u{feff}').trim_start();
    let doc: XmlCheckResults = quick_xml::de::from_str(root).map_err(|e| format!("invalid XMLDATA: {e}"))?;
    if !root_is_checkresults(root) {
        return Err("invalid XMLDATA: the root element must be <checkresults>".into());
    }
    let raw = doc
        .results
        .into_iter()
        .map(|r| RawResult {
            kind: r.kind,
            hostname: r.hostname,
            servicename: r.servicename,
            state: r.state,
            output: r.output.unwrap_or_default(),
            checktime: r.checktime,
        })
        .collect();
    convert(raw)
}

/// Whether the first element of the document is `<checkresults>`.
fn root_is_checkresults(xml: &str) -> bool {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) | Ok(quick_xml::events::Event::Empty(e)) => {
                return e.name().as_ref() == b"checkresults";
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

fn text_of(value: Option<&Value>, field: &str, required: bool) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) if required => Err(format!("{field} is missing")),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("{field} must be a string or a number, got {other}")),
    }
}

/// Reads `JSONDATA`.
pub fn parse_json(json: &str) -> Result<Vec<Incoming>, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("invalid JSONDATA: {e}"))?;
    let list = doc
        .get("checkresults")
        .and_then(Value::as_array)
        .ok_or("invalid JSONDATA: expected {\"checkresults\": [...]}")?;
    let mut raw = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = |e: String| format!("JSONDATA check result {}: {e}", i + 1);
        let kind = item
            .pointer("/checkresult/type")
            .or_else(|| item.get("type"))
            .and_then(Value::as_str)
            .ok_or_else(|| at("checkresult.type is missing".into()))?;
        raw.push(RawResult {
            kind: kind.to_string(),
            hostname: text_of(item.get("hostname"), "hostname", true).map_err(at)?.unwrap_or_default(),
            servicename: text_of(item.get("servicename"), "servicename", false).map_err(at)?,
            state: text_of(item.get("state"), "state", true).map_err(at)?.unwrap_or_default(),
            output: text_of(item.get("output"), "output", false).map_err(at)?.unwrap_or_default(),
            checktime: text_of(item.get("checktime"), "checktime", false).map_err(at)?,
        });
    }
    convert(raw)
}

fn convert(raw: Vec<RawResult>) -> Result<Vec<Incoming>, String> {
    if raw.is_empty() {
        return Err("no check result in the submission".into());
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| convert_one(r).map_err(|e| format!("check result {}: {e}", i + 1)))
        .collect()
}

fn convert_one(r: RawResult) -> Result<Incoming, String> {
    let host = r.hostname.trim().to_string();
    if host.is_empty() {
        return Err("hostname is empty".into());
    }
    let service = r.servicename.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let state: f64 = r.state.trim().parse().map_err(|_| format!("state {:?} is not a number", r.state))?;
    let state = whole(state, "state")?;
    let code = match (r.kind.to_ascii_lowercase().as_str(), &service) {
        ("service", Some(_)) => StateCode::Service(state),
        ("service", None) => return Err("a service result needs a servicename".into()),
        ("host", None) => StateCode::Host(state),
        ("host", Some(_)) => return Err("a host result must not have a servicename".into()),
        (other, _) => return Err(format!("type must be \"host\" or \"service\", got {other:?}")),
    };
    let checktime = match r.checktime.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Some(unix_seconds(t.parse().map_err(|_| format!("checktime {t:?} is not Unix seconds"))?, "checktime")?),
        None => None,
    };
    let split = split_plugin_output(&r.output);
    Ok(Incoming {
        host,
        service,
        status: status_of(code)?,
        output: split.text,
        perfdata: vec![split.perfdata].into_iter().filter(|p| !p.is_empty()).collect(),
        check_source: None,
        execution_start: None,
        execution_end: checktime,
        ticket: None,
    })
}

/// The body of an NRDP answer: XML, or JSON when the request used JSONDATA.
pub fn answer(json: bool, status: i32, message: &str, output: Option<&str>) -> (String, &'static str) {
    if json {
        let mut result = serde_json::json!({"status": status, "message": message});
        if let Some(o) = output {
            result["meta"] = serde_json::json!({"output": o});
        }
        (serde_json::json!({"result": result}).to_string(), "application/json")
    } else {
        let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let meta = output.map(|o| format!("<meta><output>{}</output></meta>", escape(o))).unwrap_or_default();
        (
            format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<result><status>{status}</status><message>{}</message>{meta}</result>\n", escape(message)),
            "application/xml",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_model::CheckStatus;

    const XML: &str = "<?xml version='1.0'?>
<checkresults>
  <checkresult type='host' checktype='1'>
    <hostname>dc01.acme.local</hostname>
    <state>0</state>
    <output>PING OK - rta 0.5ms|rta=0.5ms;100;500;0</output>
  </checkresult>
  <checkresult type='service' checktype='1'>
    <hostname>dc01.acme.local</hostname>
    <servicename>backup</servicename>
    <state>2</state>
    <output><![CDATA[CRITICAL - job <daily> failed & ticket #991|'bytes copied'=0B;;;0]]></output>
    <checktime>1768197603</checktime>
  </checkresult>
</checkresults>";

    #[test]
    fn xml_submissions_are_read_with_their_perfdata_split_off() {
        let r = parse_xml(XML).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].host.as_str(), r[0].service.as_deref(), r[0].status), ("dc01.acme.local", None, CheckStatus::Ok));
        assert_eq!((r[0].output.as_str(), r[0].perfdata.clone()), ("PING OK - rta 0.5ms", vec!["rta=0.5ms;100;500;0".to_string()]));
        assert_eq!((r[1].service.as_deref(), r[1].status), (Some("backup"), CheckStatus::Ko));
        assert_eq!(r[1].output, "CRITICAL - job <daily> failed & ticket #991");
        assert_eq!(r[1].perfdata_items().unwrap()["bytes copied"].uom, "B");
        assert_eq!(r[1].execution_end.unwrap().timestamp(), 1768197603);
        assert_eq!(r[0].execution_end, None);
    }

    #[test]
    fn xml_entities_are_decoded() {
        let xml = "<checkresults><checkresult type=\"service\"><hostname>h</hostname><servicename>s</servicename><state>1</state><output>WARN &lt;80% &amp; rising</output></checkresult></checkresults>";
        let r = parse_xml(xml).unwrap();
        assert_eq!((r[0].output.as_str(), r[0].status), ("WARN <80% & rising", CheckStatus::Warning));
    }

    #[test]
    fn bad_xml_is_refused() {
        for (xml, why) in [
            ("<checkresults><checkresult type='service'><hostname>h</hostname>", "invalid XMLDATA"),
            ("<checkresults></checkresults>", "no check result"),
            ("<results><checkresult type='host'><hostname>h</hostname><state>0</state></checkresult></results>", "root element"),
            ("<checkresults><checkresult type='service'><hostname>h</hostname><state>0</state></checkresult></checkresults>", "servicename"),
            ("<checkresults><checkresult type='service'><hostname>h</hostname><servicename>s</servicename><state>x</state></checkresult></checkresults>", "not a number"),
            ("<checkresults><checkresult type='service'><hostname>h</hostname><servicename>s</servicename><state>5</state></checkresult></checkresults>", "got 5"),
            ("<checkresults><checkresult type='passive'><hostname>h</hostname><state>0</state></checkresult></checkresults>", "type must be"),
            ("<checkresults><checkresult type='host'><state>0</state></checkresult></checkresults>", "hostname"),
            ("not xml at all", "XMLDATA"),
        ] {
            let e = parse_xml(xml).unwrap_err();
            assert!(e.contains(why), "{xml}: {e}");
        }
    }

    #[test]
    fn json_submissions_take_strings_or_numbers() {
        let json = r#"{"checkresults":[
            {"checkresult":{"type":"service","checktype":"1"},"hostname":"dc01","servicename":"backup","state":"1","output":"WARNING - slow|time=90s;60;120"},
            {"checkresult":{"type":"host"},"hostname":"dc01","state":1,"output":"DOWN","checktime":1768197603}
        ]}"#;
        let r = parse_json(json).unwrap();
        assert_eq!((r[0].status, r[0].output.as_str(), r[0].perfdata.clone()), (CheckStatus::Warning, "WARNING - slow", vec!["time=90s;60;120".to_string()]));
        assert_eq!((r[1].service.clone(), r[1].status), (None, CheckStatus::Ko));
        assert!(r[1].execution_end.is_some());
        for (bad, why) in [
            ("{", "invalid JSONDATA"),
            (r#"{"results":[]}"#, "checkresults"),
            (r#"{"checkresults":[]}"#, "no check result"),
            (r#"{"checkresults":[{"hostname":"h","state":0}]}"#, "type is missing"),
            (r#"{"checkresults":[{"checkresult":{"type":"host"},"state":0}]}"#, "hostname is missing"),
            (r#"{"checkresults":[{"checkresult":{"type":"host"},"hostname":"h","state":[0]}]}"#, "state must be"),
        ] {
            let e = parse_json(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn form_fields_come_from_the_body_and_query() {
        let body = b"token=abc%20def&cmd=submitcheck&XMLDATA=%3Ccheckresults%2F%3E&other=1";
        let f = parse_form(None, body);
        assert_eq!(f.token.as_deref(), Some("abc def"));
        assert_eq!(f.cmd.as_deref(), Some("submitcheck"));
        assert_eq!(f.xml.as_deref(), Some("<checkresults/>"));
        assert_eq!(f.json, None);
        let f = parse_form(Some("token=t1&cmd=submitcheck"), b"JSONDATA=%7B%7D");
        assert_eq!((f.token.as_deref(), f.cmd.as_deref(), f.json.as_deref()), (None, Some("submitcheck"), Some("{}")));
        assert!(f.token_in_query, "a token in the URL is noted, never used");
        assert!(!parse_form(None, body).token_in_query);
    }

    #[test]
    fn answers_in_xml_or_json() {
        let (xml, ct) = answer(false, 0, "OK", Some("2 checks processed."));
        assert_eq!(ct, "application/xml");
        assert!(xml.contains("<result><status>0</status><message>OK</message><meta><output>2 checks processed.</output></meta></result>"));
        let (json, _) = answer(true, -1, "BAD TOKEN", None);
        assert_eq!(json, r#"{"result":{"message":"BAD TOKEN","status":-1}}"#);
    }
}
