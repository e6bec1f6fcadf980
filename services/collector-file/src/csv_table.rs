//! Reading a CSV file for a collector: the header must name exactly the
//! expected columns (any order); each data row comes with its line number as
//! an editor counts it (header = 1, blank lines counted) and its bytes as
//! written, so a rejected row can be reported and dead-lettered faithfully.

use std::collections::HashMap;

/// A row that was not turned into an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRejection {
    /// Line number in the file (the header is line 1).
    pub line: u64,
    pub reason: &'static str,
    pub error: String,
    /// The row as written in the file.
    pub original: Vec<u8>,
}

/// One data row.
#[derive(Debug)]
pub struct CsvRow {
    pub line: u64,
    /// The row as written in the file, without its line end.
    pub original: Vec<u8>,
    /// The cells in header order, or why the row cannot be read.
    pub values: Result<Vec<String>, String>,
}

/// A whole file: column name -> position, and the rows.
#[derive(Debug)]
pub struct CsvTable {
    pub index: HashMap<String, usize>,
    pub rows: Vec<CsvRow>,
}

/// Reads `data`; an error is a header problem, described for the user.
pub fn read_csv_table(data: &[u8], columns: &[&str]) -> Result<CsvTable, String> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
    let header = reader.byte_headers().map_err(|e| format!("cannot read the header: {e}"))?.clone();
    let names: Vec<String> =
        header.iter().map(|h| String::from_utf8_lossy(h).trim().trim_start_matches('\u{feff}').to_string()).collect();
    let mut index = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if !columns.contains(&name.as_str()) {
            return Err(format!("unknown column {name:?}; the columns are {}", columns.join(",")));
        }
        if index.insert(name.clone(), i).is_some() {
            return Err(format!("column {name:?} appears twice"));
        }
    }
    let missing: Vec<&str> = columns.iter().copied().filter(|c| !index.contains_key(*c)).collect();
    if !missing.is_empty() {
        return Err(format!("missing columns {}; the header is {}", missing.join(","), columns.join(",")));
    }

    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    let (mut counted_to, mut counted_line) = (0usize, 1u64);
    loop {
        let read = reader.read_byte_record(&mut record);
        let end = (reader.position().byte() as usize).min(data.len());
        let mut start = record.position().map_or(end, |p| p.byte() as usize).min(data.len());
        // A record's position is where the reader started looking: before the blank lines it skipped.
        while start < end && matches!(data[start], b'\n' | b'\r') {
            start += 1;
        }
        // The reader's own line count skips blank lines; count them as an editor does.
        if start >= counted_to {
            counted_line += data[counted_to..start].iter().filter(|b| **b == b'\n').count() as u64;
            counted_to = start;
        }
        let original = data.get(start..end).unwrap_or_default();
        let original = original.strip_suffix(b"\n").unwrap_or(original);
        let original = original.strip_suffix(b"\r").unwrap_or(original).to_vec();
        let line = counted_line;
        match read {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let io = matches!(e.kind(), csv::ErrorKind::Io(_));
                rows.push(CsvRow { line, original, values: Err(e.to_string()) });
                // The reader cannot go on after an I/O error.
                if io {
                    break;
                }
                continue;
            }
        }
        let values = if record.len() != names.len() {
            Err(format!("{} fields, the header has {}", record.len(), names.len()))
        } else {
            record
                .iter()
                .map(|f| std::str::from_utf8(f).map(str::to_string))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|e| format!("not UTF-8: {e}"))
        };
        rows.push(CsvRow { line, original, values });
    }
    Ok(CsvTable { index, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_editor_line_and_bytes() {
        let data = b"b,a\n1,2\n\n3,4,5\n\xff,6\r\n7,8";
        let table = read_csv_table(data, &["a", "b"]).unwrap();
        assert_eq!(table.index["a"], 1);
        let lines: Vec<u64> = table.rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 4, 5, 6]);
        assert_eq!(table.rows[0].values.as_deref().unwrap(), ["1", "2"]);
        assert!(table.rows[1].values.as_ref().unwrap_err().contains("3 fields"));
        assert!(table.rows[2].values.as_ref().unwrap_err().contains("UTF-8"));
        assert_eq!(table.rows[2].original, b"\xff,6");
        assert_eq!(table.rows[3].original, b"7,8");
    }

    #[test]
    fn a_wrong_header_is_refused_with_the_expected_columns() {
        assert!(read_csv_table(b"a,c\n", &["a", "b"]).unwrap_err().contains("unknown column \"c\""));
        assert!(read_csv_table(b"a\n", &["a", "b"]).unwrap_err().contains("missing columns b"));
        assert!(read_csv_table(b"a,a,b\n", &["a", "b"]).unwrap_err().contains("twice"));
    }
}
