//! A very small Redis client: RESP2 over a `std::net::TcpStream`, which on
//! `wasm32-wasip2` is `wasi:sockets` (and the host name goes through
//! `wasi:sockets/ip-name-lookup`).
//!
//! Commands go out as arrays of bulk strings; replies come back as simple
//! strings, errors, integers, bulk strings, arrays, and their null forms.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

/// One RESP2 reply.
#[derive(Debug, PartialEq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: Redis refused the command.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc` or the null bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...` or the null array `*-1` (e.g. `BLPOP` timing out).
    Array(Option<Vec<Value>>),
}

/// Where to connect, from a `redis://[[user]:password@]host[:port][/db]` URL.
#[derive(Debug, PartialEq)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: Option<u32>,
}

impl Config {
    /// Parses a `redis://` URL; the scheme may be left out, the port
    /// defaults to 6379.
    pub fn from_url(url: &str) -> Result<Config, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("redis") => rest,
            Some((scheme, _)) => {
                return Err(format!("unsupported scheme {scheme:?} (use redis://)"))
            }
            None => url,
        };
        let (address, db) = match rest.split_once('/') {
            Some((address, "")) => (address, None),
            Some((address, db)) => {
                let db = db
                    .parse()
                    .map_err(|_| format!("database {db:?} is not a number"))?;
                (address, Some(db))
            }
            None => (rest, None),
        };
        let (username, password, host_port) = match address.rsplit_once('@') {
            Some((userinfo, host_port)) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                let user = (!user.is_empty()).then(|| user.to_string());
                match password {
                    Some(password) => (user, Some(password.to_string()), host_port),
                    // `redis://secret@host`: a lone userinfo is the password.
                    None => (None, user, host_port),
                }
            }
            None => (None, None, address),
        };
        let (host, port) = split_host_port(host_port)?;
        if host.is_empty() {
            return Err("no host".to_string());
        }
        Ok(Config {
            host: host.to_string(),
            port,
            username,
            password,
            db,
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("port {p:?} is not a number from 0 to 65535"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {s:?}"))?;
        return match after {
            "" => Ok((host, 6379)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, parse_port(port)?)),
                None => Err(format!("unexpected {after:?} after ']'")),
            },
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Ok((host, parse_port(port)?)),
        None => Ok((s, 6379)),
    }
}

impl fmt::Display for Config {
    /// The address, without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "redis://[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "redis://{}:{}", self.host, self.port)?;
        }
        match self.db {
            Some(db) => write!(f, "/{db}"),
            None => Ok(()),
        }
    }
}

/// An open connection. Replies are read through the buffer; commands are
/// written to the socket underneath it (`try_clone` is not available on
/// wasm32-wasip2).
pub struct Connection {
    stream: BufReader<TcpStream>,
}

/// Nothing slower than this between a command and its reply is healthy
/// (the worker's `BLPOP` waits 1 s): a dead peer is noticed within it.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines and bulk strings longer than this are treated as a broken stream.
const MAX_LINE: usize = 64 * 1024;
const MAX_BULK: usize = 512 * 1024 * 1024;
const MAX_DEPTH: usize = 32;

impl Connection {
    /// Connects, then authenticates and selects the database if the config
    /// asks for it.
    pub fn open(config: &Config) -> io::Result<Connection> {
        let stream = TcpStream::connect((config.host.as_str(), config.port))?;
        // Best effort: not every host implements these socket options.
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let mut connection = Connection {
            stream: BufReader::new(stream),
        };
        if let Some(password) = &config.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &config.username {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            connection.command_ok(&args)?;
        }
        if let Some(db) = config.db {
            connection.command_ok(&[b"SELECT", db.to_string().as_bytes()])?;
        }
        Ok(connection)
    }

    /// Sends one command and reads its reply (which may be [`Value::Error`]).
    pub fn command(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        let socket = self.stream.get_mut();
        socket.write_all(&encode(args))?;
        socket.flush()?;
        read_value(&mut self.stream)
    }

    /// Like [`Connection::command`], with an error reply turned into an
    /// `io::Error`.
    pub fn command_ok(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        match self.command(args)? {
            Value::Error(message) => Err(io::Error::other(format!(
                "{} refused: {message}",
                String::from_utf8_lossy(args.first().copied().unwrap_or_default())
            ))),
            value => Ok(value),
        }
    }
}

/// A command as RESP: an array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one complete reply.
pub fn read_value(reader: &mut impl BufRead) -> io::Result<Value> {
    read_nested(reader, 0)
}

fn read_nested(reader: &mut impl BufRead, depth: usize) -> io::Result<Value> {
    if depth > MAX_DEPTH {
        return Err(invalid("reply nested too deeply"));
    }
    let line = read_line(reader)?;
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| invalid("empty reply line"))?;
    let text = String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(Value::Simple(text)),
        b'-' => Ok(Value::Error(text)),
        b':' => Ok(Value::Integer(parse_int(&text)?)),
        b'$' => match parse_int(&text)? {
            -1 => Ok(Value::Bulk(None)),
            len if (0..=MAX_BULK as i64).contains(&len) => {
                let mut data = vec![0; len as usize + 2];
                reader.read_exact(&mut data)?;
                if !data.ends_with(b"\r\n") {
                    return Err(invalid("bulk string not followed by CRLF"));
                }
                data.truncate(len as usize);
                Ok(Value::Bulk(Some(data)))
            }
            len => Err(invalid(&format!("bad bulk string length {len}"))),
        },
        b'*' => match parse_int(&text)? {
            -1 => Ok(Value::Array(None)),
            len if len >= 0 => {
                let items = (0..len)
                    .map(|_| read_nested(reader, depth + 1))
                    .collect::<io::Result<Vec<_>>>()?;
                Ok(Value::Array(Some(items)))
            }
            len => Err(invalid(&format!("bad array length {len}"))),
        },
        other => Err(invalid(&format!(
            "unknown reply type {:?}",
            char::from(other)
        ))),
    }
}

/// One CRLF-terminated line, without the CRLF.
fn read_line(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by redis",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(invalid("reply line not terminated by CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(text: &str) -> io::Result<i64> {
    text.parse()
        .map_err(|_| invalid(&format!("bad integer {text:?}")))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        assert_eq!(
            encode(&[b"RPUSH", b"results", b"done:a"]),
            b"*3\r\n$5\r\nRPUSH\r\n$7\r\nresults\r\n$6\r\ndone:a\r\n"
        );
    }

    #[test]
    fn decodes_replies() {
        let mut input: &[u8] =
            b"+OK\r\n-ERR no\r\n:12\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n*2\r\n$4\r\njobs\r\n$0\r\n\r\n";
        let mut next = || read_value(&mut input).unwrap();
        assert_eq!(next(), Value::Simple("OK".into()));
        assert_eq!(next(), Value::Error("ERR no".into()));
        assert_eq!(next(), Value::Integer(12));
        assert_eq!(next(), Value::Bulk(Some(b"abc".to_vec())));
        assert_eq!(next(), Value::Bulk(None));
        assert_eq!(next(), Value::Array(None));
        assert_eq!(
            next(),
            Value::Array(Some(vec![
                Value::Bulk(Some(b"jobs".to_vec())),
                Value::Bulk(Some(Vec::new()))
            ]))
        );
        assert!(read_value(&mut input).is_err());
    }

    #[test]
    fn parses_urls() {
        let c = Config::from_url("redis://127.0.0.1:16379").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("127.0.0.1", 16379, None));
        let c = Config::from_url("redis://u:p@cache/2").unwrap();
        assert_eq!(c.host, "cache");
        assert_eq!(c.port, 6379);
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some("p"));
        assert_eq!(c.db, Some(2));
        let c = Config::from_url("redis://:secret@[::1]:7000").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 7000));
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (None, Some("secret"))
        );
        assert_eq!(c.to_string(), "redis://[::1]:7000");
        assert!(Config::from_url("http://x").is_err());
        assert!(Config::from_url("redis://x:port").is_err());
    }
}
