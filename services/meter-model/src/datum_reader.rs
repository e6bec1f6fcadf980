//! Reads the values of an Avro binary datum one by one, as `serde_avro_fast`
//! 2.1 reads them (the rules the fast decoder has accepted messages by, kept
//! exactly; `tests/fast_decode.rs` compares both readers on damaged
//! messages): varints of at most ten bytes whose tenth is 0 or 1, `int`s in
//! range, booleans 0 or 1, lengths and indexes not negative, strings in UTF-8,
//! arrays in blocks (a negative count is followed by a byte size). The reader
//! of a whole record (`fast_decode`) adds the rest: union and enum indexes
//! within the writer's schema, at most
//! [`MAX_ALLOCATION_BYTES`](crate::codec::MAX_ALLOCATION_BYTES) array items.
//!
//! Nothing here allocates: strings are borrowed from the message.

/// Why a value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("the datum ends inside a value")]
    Truncated,
    #[error("a varint longer than 64 bits")]
    VarintTooLong,
    #[error("int {0} out of range")]
    IntOutOfRange(i64),
    #[error("invalid boolean byte {0}")]
    BadBoolean(u8),
    #[error("negative length or index {0}")]
    Negative(i64),
    #[error("string is not valid UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("union branch {0} is not in the writer's schema")]
    UnknownBranch(usize),
    #[error("enum symbol {0} is not in the writer's schema")]
    UnknownSymbolIndex(usize),
    #[error("enum symbol {0} of the writer's schema is not one this build knows")]
    UnknownSymbol(usize),
    #[error("more than {0} array items")]
    TooManyItems(usize),
}

/// The unread rest of a datum.
pub(crate) struct DatumReader<'a> {
    rest: &'a [u8],
}

impl<'a> DatumReader<'a> {
    pub(crate) fn new(datum: &'a [u8]) -> Self {
        DatumReader { rest: datum }
    }

    /// Whether every byte was read (anything left is trailing garbage).
    pub(crate) fn is_at_end(&self) -> bool {
        self.rest.is_empty()
    }

    /// An unsigned varint: 7 bits a byte, low first; the tenth byte may only
    /// hold the 64th bit.
    #[inline]
    fn varint(&mut self) -> Result<u64, ReadError> {
        // Lengths, indexes and small numbers: one byte.
        if let Some((&byte, rest)) = self.rest.split_first() {
            if byte < 0x80 {
                self.rest = rest;
                return Ok(u64::from(byte));
            }
        }
        self.long_varint()
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Result<u64, ReadError> {
        let mut value: u64 = 0;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            let last = if i == 9 {
                if byte > 1 {
                    return Err(ReadError::VarintTooLong);
                }
                true
            } else {
                byte & 0x80 == 0
            };
            if last {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(ReadError::Truncated)
    }

    /// A `long` (zigzag varint).
    pub(crate) fn long(&mut self) -> Result<i64, ReadError> {
        let z = self.varint()?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    pub(crate) fn int(&mut self) -> Result<i32, ReadError> {
        let value = self.long()?;
        i32::try_from(value).map_err(|_| ReadError::IntOutOfRange(value))
    }

    pub(crate) fn boolean(&mut self) -> Result<bool, ReadError> {
        let Some((&byte, rest)) = self.rest.split_first() else {
            return Err(ReadError::Truncated);
        };
        let value = match byte {
            0 => false,
            1 => true,
            other => return Err(ReadError::BadBoolean(other)),
        };
        self.rest = rest;
        Ok(value)
    }

    /// A length, a union branch or an enum symbol's position.
    pub(crate) fn index(&mut self) -> Result<usize, ReadError> {
        let value = self.long()?;
        usize::try_from(value).map_err(|_| ReadError::Negative(value))
    }

    pub(crate) fn text(&mut self) -> Result<&'a str, ReadError> {
        let len = self.index()?;
        let Some((bytes, rest)) = self.rest.split_at_checked(len) else {
            return Err(ReadError::Truncated);
        };
        self.rest = rest;
        utf8(bytes)
    }

    /// The item count of the next block of an array: 0 ends the array. A
    /// negative count is followed by the block's size in bytes, unused here.
    pub(crate) fn block_len(&mut self) -> Result<usize, ReadError> {
        let count = self.long()?;
        if count < 0 {
            self.varint()?;
        }
        usize::try_from(count.unsigned_abs()).map_err(|_| ReadError::TooManyItems(usize::MAX))
    }
}

/// `bytes` as text if they are UTF-8, checked fast when they are ASCII (ids,
/// names: nearly every string of an event).
#[inline]
fn utf8(bytes: &[u8]) -> Result<&str, ReadError> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        Ok(std::str::from_utf8(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<'a, T>(bytes: &'a [u8], f: impl FnOnce(&mut DatumReader<'a>) -> Result<T, ReadError>) -> Result<(T, usize), ReadError> {
        let mut reader = DatumReader::new(bytes);
        let value = f(&mut reader)?;
        Ok((value, reader.rest.len()))
    }

    #[test]
    fn varints_follow_serde_avro_fast() {
        assert_eq!(read(&[0x00], |r| r.long()), Ok((0, 0)));
        assert_eq!(read(&[0x01], |r| r.long()), Ok((-1, 0)));
        assert_eq!(read(&[0x02, 0xff], |r| r.long()), Ok((1, 1)));
        assert_eq!(read(&[0xac, 0x02], |r| r.long()), Ok((150, 0)));
        // The extremes take ten bytes, the last one 0x01.
        let max = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read(&max, |r| r.long()), Ok((i64::MAX, 0)));
        let min = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read(&min, |r| r.long()), Ok((i64::MIN, 0)));
        // A tenth byte above 1 would pass 64 bits; an eleventh byte never comes.
        let mut too_long = max;
        too_long[9] = 0x02;
        assert_eq!(read(&too_long, |r| r.long()), Err(ReadError::VarintTooLong));
        assert_eq!(read(&[0x80; 12], |r| r.long()), Err(ReadError::VarintTooLong));
        // Padded encodings are read (serde_avro_fast reads them too).
        assert_eq!(read(&[0x82, 0x00], |r| r.long()), Ok((1, 0)));
        assert_eq!(read(&[0x80, 0x80], |r| r.long()), Err(ReadError::Truncated));
        assert_eq!(read(&[], |r| r.long()), Err(ReadError::Truncated));
    }

    #[test]
    fn ints_booleans_strings_and_blocks() {
        assert_eq!(read(&[0xfe, 0xff, 0xff, 0xff, 0x0f], |r| r.int()), Ok((i32::MAX, 0)));
        assert_eq!(read(&[0x80, 0x80, 0x80, 0x80, 0x10], |r| r.int()), Err(ReadError::IntOutOfRange(1 << 31)));
        assert_eq!(read(&[1], |r| r.boolean()), Ok((true, 0)));
        assert_eq!(read(&[2], |r| r.boolean()), Err(ReadError::BadBoolean(2)));
        assert_eq!(read(&[], |r| r.boolean()), Err(ReadError::Truncated));
        assert_eq!(read(&[0x06, b'a', b'b', b'c', 0], |r| r.text()), Ok(("abc", 1)));
        assert_eq!(read(&[0x04, 0xc3, 0xa9], |r| r.text()), Ok(("é", 0)));
        assert!(matches!(read(&[0x02, 0xff], |r| r.text()), Err(ReadError::NotUtf8(_))));
        assert_eq!(read(&[0x08, b'a'], |r| r.text()), Err(ReadError::Truncated));
        assert_eq!(read(&[0x01], |r| r.text()), Err(ReadError::Negative(-1)));
        // -2 items, then their size in bytes (7).
        assert_eq!(read(&[0x03, 0x0e], |r| r.block_len()), Ok((2, 0)));
        assert_eq!(read(&[0x00], |r| r.block_len()), Ok((0, 0)));
    }
}
