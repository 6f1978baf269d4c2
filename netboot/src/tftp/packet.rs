//! TFTP packets (RFC 1350, with the OACK of RFC 2347): parse every field with a bound check, and
//! encode replies. Parsing never panics; each error names the field that was wrong, because the
//! peer is often a boot ROM whose bugs are only visible in our logs.

use std::fmt;

pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// Transfer mode of a request. `mail` is obsolete and refused by the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
}

/// A read or write request: file name, mode and the options in the order the client sent them
/// (names lower-cased, values as sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: Mode,
    pub options: Vec<(String, String)>,
}

/// A decoded TFTP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Rrq(Request),
    Wrq(Request),
    Data { block: u16, data: Vec<u8> },
    Ack { block: u16 },
    Error { code: u16, message: String },
    Oack { options: Vec<(String, String)> },
}

/// TFTP error codes (RFC 1350 + RFC 2347).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
}

/// Why bytes are not a TFTP packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    #[error("packet of {0} bytes is too short for an opcode")]
    NoOpcode(usize),
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("{0}: missing terminating NUL")]
    MissingNul(&'static str),
    #[error("{0}: not UTF-8")]
    NotUtf8(&'static str),
    #[error("{0}: empty")]
    Empty(&'static str),
    #[error("mode '{0}' is not octet or netascii")]
    BadMode(String),
    #[error("option '{0}' has no value")]
    OptionWithoutValue(String),
    #[error("{what} packet of {len} bytes is truncated")]
    Truncated { what: &'static str, len: usize },
    #[error("bytes after the last option")]
    TrailingBytes,
}

impl Packet {
    /// The opcode's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Packet::Rrq(_) => "RRQ",
            Packet::Wrq(_) => "WRQ",
            Packet::Data { .. } => "DATA",
            Packet::Ack { .. } => "ACK",
            Packet::Error { .. } => "ERROR",
            Packet::Oack { .. } => "OACK",
        }
    }

    /// Decodes one datagram.
    pub fn parse(buf: &[u8]) -> Result<Packet, PacketError> {
        if buf.len() < 2 {
            return Err(PacketError::NoOpcode(buf.len()));
        }
        let opcode = u16::from_be_bytes([buf[0], buf[1]]);
        let body = &buf[2..];
        match opcode {
            OP_RRQ => parse_request(body).map(Packet::Rrq),
            OP_WRQ => parse_request(body).map(Packet::Wrq),
            OP_DATA => {
                let block = be16(body, "DATA", buf.len())?;
                Ok(Packet::Data { block, data: body[2..].to_vec() })
            }
            // Extra bytes after the block number are tolerated: some ROMs pad their ACKs.
            OP_ACK => Ok(Packet::Ack { block: be16(body, "ACK", buf.len())? }),
            OP_ERROR => {
                let code = be16(body, "ERROR", buf.len())?;
                // A client's ERROR ends a transfer even when its message is malformed: being
                // lenient here is what lets a PXE ROM's abort work.
                let text = &body[2..];
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                let message = String::from_utf8_lossy(&text[..end]).into_owned();
                Ok(Packet::Error { code, message })
            }
            OP_OACK => {
                let mut fields = Fields::new(body)?;
                let options = parse_options(&mut fields)?;
                Ok(Packet::Oack { options })
            }
            other => Err(PacketError::UnknownOpcode(other)),
        }
    }

    /// Encodes the packet into a fresh buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Packet::Rrq(req) | Packet::Wrq(req) => {
                let op = if matches!(self, Packet::Rrq(_)) { OP_RRQ } else { OP_WRQ };
                out.extend_from_slice(&op.to_be_bytes());
                push_str(&mut out, &req.filename);
                push_str(
                    &mut out,
                    match req.mode {
                        Mode::Octet => "octet",
                        Mode::Netascii => "netascii",
                    },
                );
                for (name, value) in &req.options {
                    push_str(&mut out, name);
                    push_str(&mut out, value);
                }
            }
            Packet::Data { block, data } => encode_data_into(&mut out, *block, data),
            Packet::Ack { block } => {
                out.extend_from_slice(&OP_ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&OP_ERROR.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                push_str(&mut out, message);
            }
            Packet::Oack { options } => {
                out.extend_from_slice(&OP_OACK.to_be_bytes());
                for (name, value) in options {
                    push_str(&mut out, name);
                    push_str(&mut out, value);
                }
            }
        }
        out
    }
}

/// Encodes a DATA packet into `out` (cleared first), so a transfer can reuse one buffer.
pub fn encode_data_into(out: &mut Vec<u8>, block: u16, data: &[u8]) {
    out.clear();
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(data);
}

/// An ERROR packet with one of our codes.
pub fn error_packet(code: ErrorCode, message: &str) -> Vec<u8> {
    Packet::Error { code: code as u16, message: message.to_string() }.encode()
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn be16(body: &[u8], what: &'static str, len: usize) -> Result<u16, PacketError> {
    match body {
        [hi, lo, ..] => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(PacketError::Truncated { what, len }),
    }
}

/// The NUL-terminated strings of a request or OACK body.
struct Fields<'a> {
    parts: std::slice::Split<'a, u8, fn(&u8) -> bool>,
}

impl<'a> Fields<'a> {
    fn new(body: &'a [u8]) -> Result<Self, PacketError> {
        fn is_nul(b: &u8) -> bool {
            *b == 0
        }
        Ok(Fields { parts: body.split(is_nul as fn(&u8) -> bool) })
    }

    /// The next NUL-terminated field; `None` at the end of the packet. The split yields one last
    /// piece after the final NUL, which must be empty, so a field without NUL is caught here.
    fn next(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, PacketError> {
        let Some(field) = self.parts.next() else {
            return Ok(None);
        };
        if self.parts.clone().next().is_none() {
            // `field` was the piece after the last NUL.
            return if field.is_empty() { Ok(None) } else { Err(PacketError::MissingNul(what)) };
        }
        Ok(Some(field))
    }

    fn next_str(&mut self, what: &'static str) -> Result<Option<&'a str>, PacketError> {
        match self.next(what)? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|_| PacketError::NotUtf8(what)),
        }
    }
}

fn parse_request(body: &[u8]) -> Result<Request, PacketError> {
    let mut fields = Fields::new(body)?;
    let filename = fields.next_str("file name")?.ok_or(PacketError::MissingNul("file name"))?;
    if filename.is_empty() {
        return Err(PacketError::Empty("file name"));
    }
    let mode_text = fields.next_str("mode")?.ok_or(PacketError::MissingNul("mode"))?;
    let mode = match mode_text.to_ascii_lowercase().as_str() {
        "octet" => Mode::Octet,
        "netascii" => Mode::Netascii,
        _ => return Err(PacketError::BadMode(mode_text.to_string())),
    };
    let options = parse_options(&mut fields)?;
    Ok(Request { filename: filename.to_string(), mode, options })
}

/// Option name/value pairs until the end. Empty names end the list: some clients pad requests
/// with NULs, which is harmless; anything else after that padding is an error.
fn parse_options(fields: &mut Fields<'_>) -> Result<Vec<(String, String)>, PacketError> {
    let mut options = Vec::new();
    while let Some(name) = fields.next_str("option name")? {
        if name.is_empty() {
            while let Some(rest) = fields.next("padding")? {
                if !rest.is_empty() {
                    return Err(PacketError::TrailingBytes);
                }
            }
            break;
        }
        let value = fields
            .next_str("option value")?
            .ok_or_else(|| PacketError::OptionWithoutValue(name.to_string()))?;
        options.push((name.to_ascii_lowercase(), value.to_string()));
    }
    Ok(options)
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rrq(bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 1];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn parses_rrq_with_options() {
        let p = Packet::parse(&rrq(b"pxelinux.0\0OCTET\0TSIZE\x000\0blksize\x001456\0")).unwrap();
        assert_eq!(
            p,
            Packet::Rrq(Request {
                filename: "pxelinux.0".into(),
                mode: Mode::Octet,
                options: vec![("tsize".into(), "0".into()), ("blksize".into(), "1456".into())],
            })
        );
    }

    #[test]
    fn round_trips_every_kind() {
        let packets = [
            Packet::Rrq(Request {
                filename: "a/b".into(),
                mode: Mode::Netascii,
                options: vec![("windowsize".into(), "4".into())],
            }),
            Packet::Wrq(Request { filename: "x".into(), mode: Mode::Octet, options: vec![] }),
            Packet::Data { block: 65535, data: vec![1, 2, 3] },
            Packet::Ack { block: 0 },
            Packet::Error { code: 1, message: "file not found".into() },
            Packet::Oack { options: vec![("tsize".into(), "123".into())] },
        ];
        for p in packets {
            assert_eq!(Packet::parse(&p.encode()).unwrap(), p);
        }
    }

    #[test]
    fn rejects_malformed_requests() {
        assert_eq!(Packet::parse(&[]), Err(PacketError::NoOpcode(0)));
        assert_eq!(Packet::parse(&[0]), Err(PacketError::NoOpcode(1)));
        assert_eq!(Packet::parse(&[0, 9]), Err(PacketError::UnknownOpcode(9)));
        assert_eq!(Packet::parse(&rrq(b"file")), Err(PacketError::MissingNul("file name")));
        assert_eq!(Packet::parse(&rrq(b"file\0octet")), Err(PacketError::MissingNul("mode")));
        assert_eq!(Packet::parse(&rrq(b"file\0")), Err(PacketError::MissingNul("mode")));
        assert_eq!(Packet::parse(&rrq(b"\0octet\0")), Err(PacketError::Empty("file name")));
        assert_eq!(Packet::parse(&rrq(b"f\xff\0octet\0")), Err(PacketError::NotUtf8("file name")));
        assert_eq!(Packet::parse(&rrq(b"f\0mail\0")), Err(PacketError::BadMode("mail".into())));
        assert_eq!(
            Packet::parse(&rrq(b"f\0octet\0tsize\0")),
            Err(PacketError::OptionWithoutValue("tsize".into()))
        );
        assert_eq!(
            Packet::parse(&rrq(b"f\0octet\0tsize\x000")),
            Err(PacketError::MissingNul("option value"))
        );
        assert_eq!(Packet::parse(&rrq(b"f\0octet\0\0junk\0")), Err(PacketError::TrailingBytes));
        assert_eq!(Packet::parse(&[0, 4, 0]), Err(PacketError::Truncated { what: "ACK", len: 3 }));
        assert_eq!(Packet::parse(&[0, 3]), Err(PacketError::Truncated { what: "DATA", len: 2 }));
    }

    #[test]
    fn tolerates_nul_padding_and_padded_acks_and_sloppy_errors() {
        let p = Packet::parse(&rrq(b"f\0octet\0\0\0\0")).unwrap();
        assert!(matches!(p, Packet::Rrq(r) if r.options.is_empty()));
        assert_eq!(Packet::parse(&[0, 4, 0, 7, 0, 0]), Ok(Packet::Ack { block: 7 }));
        assert_eq!(
            Packet::parse(&[0, 5, 0, 0, b'a', b'b']),
            Ok(Packet::Error { code: 0, message: "ab".into() })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, .. ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = Packet::parse(&bytes);
        }

        #[test]
        fn arbitrary_requests_never_panic(
            op in 1u16..=6,
            body in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>(), Just(b'a')], 0..200),
        ) {
            let mut bytes = op.to_be_bytes().to_vec();
            bytes.extend_from_slice(&body);
            if let Ok(p) = Packet::parse(&bytes) {
                // Whatever parsed must encode to something that parses to the same packet.
                if !matches!(p, Packet::Error { .. }) {
                    prop_assert_eq!(Packet::parse(&p.encode()), Ok(p));
                }
            }
        }
    }
}
