//! The SMTP gateway against a real SMTP server: a small ESMTP sink on 127.0.0.1 that lettre
//! talks to over TCP, without TLS. The sink records the envelopes, the raw DATA, the AUTH
//! credentials and the connections; the tests parse what arrived with mail-parser, as the
//! receiving side would, rather than searching the raw text.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};
use shared::domain::{Channel, Content, MessageId, Priority};
use shared::gateway::secret::Secret;
use shared::gateway::smtp::{SmtpConfig, SmtpGateway, SmtpTls};
use shared::ports::{Gateway, GatewayError, GatewayReceipt, OutboundMessage};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const USER: &str = "relay-user@news.example.org";
/// Non-ASCII and a space: the credentials must survive base64 both ways.
const PASSWORD: &str = "correct horse ☂ battery";
const SENDER: &str = "Herald Alerts <alerts@news.example.org>";
const SUBJECT: &str = "Sturmwarnung für Köln ☔";
/// RCPT TO this address is answered 550: no such mailbox, for good.
const GONE: &str = "gone@example.com";
/// RCPT TO this address is answered 451: greylisted, try again later.
const GREYLISTED: &str = "later@example.com";

/// One message the sink accepted.
#[derive(Debug, Clone)]
struct Delivered {
    /// 1 for the first connection the sink accepted, 2 for the second, …
    connection: usize,
    mail_from: String,
    rcpt_to: Vec<String>,
    /// The DATA as sent, dot-stuffing undone, without the final ".".
    data: Vec<u8>,
}

/// One AUTH exchange, decoded.
#[derive(Debug, Clone, PartialEq)]
struct Login {
    mechanism: String,
    username: String,
    password: String,
}

#[derive(Default)]
struct Seen {
    connections: usize,
    logins: Vec<Login>,
    delivered: Vec<Delivered>,
}

/// An ESMTP server good enough for lettre: EHLO, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA, RSET,
/// NOOP, QUIT. No PIPELINING is advertised, so every command waits for its reply.
struct Sink {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Sink {
    /// `auth`: the mechanisms to advertise (`"PLAIN LOGIN"`); with them the sink demands AUTH
    /// with `USER` and `PASSWORD` before MAIL. `None`: an open relay without AUTH.
    async fn start(auth: Option<&'static str>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = {
                    let mut seen = state.lock().unwrap();
                    seen.connections += 1;
                    seen.connections
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    // A client that hangs up without QUIT (lettre's abort) is not a failure.
                    let _ = serve(stream, connection, auth, state).await;
                });
            }
        });
        Sink { addr, seen }
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }
}

async fn serve(
    stream: TcpStream,
    connection: usize,
    auth: Option<&'static str>,
    seen: Arc<Mutex<Seen>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write
        .write_all(b"220 sink.test ESMTP Herald test sink\r\n")
        .await?;
    let mut authenticated = auth.is_none();
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    while let Some(line) = read_line(&mut read).await? {
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let reply: String = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                let mut reply = "250-sink.test greets you\r\n".to_owned();
                if let Some(mechanisms) = auth {
                    reply.push_str(&format!("250-AUTH {mechanisms}\r\n"));
                }
                reply.push_str("250-8BITMIME\r\n250 SMTPUTF8");
                reply
            }
            "HELO" => "250 sink.test".into(),
            "AUTH" => {
                let mut words = arg.split_whitespace();
                let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
                let initial = words.next().map(str::to_owned);
                let offered = auth.is_some_and(|m| m.split_whitespace().any(|m| m == mechanism));
                let credentials = match mechanism.as_str() {
                    _ if !offered => None,
                    "PLAIN" => {
                        // "\0user\0password", in the command or after an empty challenge.
                        let response = match initial {
                            Some(r) => r,
                            None => challenge(&mut read, &mut write, "").await?,
                        };
                        decode(&response).and_then(|plain| {
                            let mut fields = plain.split('\0');
                            let _authorization_id = fields.next()?;
                            Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
                        })
                    }
                    "LOGIN" => {
                        let user = match initial {
                            Some(u) => u,
                            None => challenge(&mut read, &mut write, "Username:").await?,
                        };
                        let password = challenge(&mut read, &mut write, "Password:").await?;
                        decode(&user).zip(decode(&password))
                    }
                    _ => None,
                };
                match credentials {
                    None if !offered => "504 5.5.4 Unrecognized authentication type".into(),
                    None => "501 5.5.2 Cannot decode the response".into(),
                    Some((username, password)) => {
                        let good = username == USER && password == PASSWORD;
                        seen.lock().unwrap().logins.push(Login {
                            mechanism,
                            username,
                            password,
                        });
                        authenticated |= good;
                        if good {
                            "235 2.7.0 Authentication successful".into()
                        } else {
                            "535 5.7.8 Authentication credentials invalid".into()
                        }
                    }
                }
            }
            "MAIL" if !authenticated => "530 5.7.0 Authentication required".into(),
            "MAIL" => {
                mail_from = Some(path(arg));
                rcpt_to.clear();
                "250 2.1.0 OK".into()
            }
            "RCPT" if mail_from.is_none() => "503 5.5.1 MAIL first".into(),
            "RCPT" => match path(arg) {
                to if to == GONE => format!("550 5.1.1 <{to}>: no such mailbox"),
                to if to == GREYLISTED => "451 4.7.1 Greylisted, try again later".into(),
                to => {
                    rcpt_to.push(to);
                    "250 2.1.5 OK".into()
                }
            },
            "DATA" if rcpt_to.is_empty() => "503 5.5.1 No valid recipients".into(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let data = read_data(&mut read).await?;
                let mut seen = seen.lock().unwrap();
                seen.delivered.push(Delivered {
                    connection,
                    mail_from: mail_from.take().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut rcpt_to),
                    data,
                });
                format!("250 2.0.0 Queued as {}", seen.delivered.len())
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                "250 2.0.0 OK".into()
            }
            "NOOP" => "250 2.0.0 OK".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognized".into(),
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
    Ok(())
}

/// One command line without its CRLF; `None` when the client hung up.
async fn read_line(read: &mut BufReader<OwnedReadHalf>) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    if read.read_until(b'\n', &mut line).await? == 0 {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&line);
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
}

/// A 334 challenge (its text base64 encoded) and the client's answer.
async fn challenge(
    read: &mut BufReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
    prompt: &str,
) -> std::io::Result<String> {
    write
        .write_all(format!("334 {}\r\n", STANDARD.encode(prompt)).as_bytes())
        .await?;
    read_line(read)
        .await?
        .ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
}

fn decode(base64: &str) -> Option<String> {
    String::from_utf8(STANDARD.decode(base64).ok()?).ok()
}

/// The address in `FROM:<a@b> BODY=8BITMIME` or `TO:<a@b>`.
fn path(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_owned()
}

/// DATA lines up to the lone "."; a line the client dot-stuffed (RFC 5321 4.5.2) loses its
/// first dot again.
async fn read_data(read: &mut BufReader<OwnedReadHalf>) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let mut line = Vec::new();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(data);
        }
        data.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
    }
}

fn config(sink: &Sink) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(sink.addr.port()),
        tls: SmtpTls::None,
        username: Some(USER.into()),
        password: Some(Secret::new(PASSWORD)),
        from: Some(SENDER.into()),
        pool_size: 1,
    }
}

fn email(to: &str) -> OutboundMessage {
    OutboundMessage {
        id: MessageId::new(),
        tenant: "acme".into(),
        channel: Channel::Email,
        priority: Priority::P1,
        to: to.into(),
        from: None,
        content: Content {
            subject: Some(SUBJECT.into()),
            body: Some("Bleiben Sie drinnen.\r\nDer Sturm zieht über Köln.".into()),
            html: Some("<p>Bleiben Sie drinnen.</p><p>Der Sturm zieht über Köln.</p>".into()),
        },
        attempt: 1,
        correlation_id: "c-1".into(),
        unsubscribe_url: Some("https://news.example.org/u/abc?t=1".into()),
        one_click_url: None,
        media_urls: Vec::new(),
        whatsapp_template: None,
    }
}

/// The one message the sink accepted.
fn only_delivered(sink: &Sink) -> Delivered {
    let seen = sink.seen();
    assert_eq!(seen.delivered.len(), 1, "exactly one message delivered");
    seen.delivered[0].clone()
}

/// Text bodies compared line by line: on the wire lines end with CRLF, and lettre sends a
/// single-part body with one line end more than it had.
fn lines(text: &str) -> Vec<&str> {
    text.trim_end_matches(['\r', '\n']).lines().collect()
}

fn message_id_of(receipt: &GatewayReceipt) -> &str {
    receipt
        .provider_message_id
        .strip_prefix('<')
        .and_then(|id| id.strip_suffix('>'))
        .unwrap_or_else(|| panic!("not <id>: {}", receipt.provider_message_id))
}

#[tokio::test]
async fn delivers_alternative_parts_a_utf8_subject_and_one_click_unsubscribe() {
    let sink = Sink::start(Some("PLAIN LOGIN")).await;
    let gateway = SmtpGateway::new(config(&sink)).unwrap();
    let m = email("Ann Example <ann@example.com>");
    let receipt = gateway.send(&m).await.unwrap();

    // lettre prefers PLAIN when both are offered; the sink saw the configured credentials.
    assert_eq!(
        sink.seen().logins,
        [Login {
            mechanism: "PLAIN".into(),
            username: USER.into(),
            password: PASSWORD.into(),
        }]
    );
    let delivered = only_delivered(&sink);
    assert_eq!(delivered.mail_from, "alerts@news.example.org");
    assert_eq!(delivered.rcpt_to, ["ann@example.com"]);

    let parsed = MessageParser::default().parse(&delivered.data).unwrap();
    let from = parsed.from().and_then(|a| a.first()).unwrap();
    assert_eq!(from.name(), Some("Herald Alerts"));
    assert_eq!(from.address(), Some("alerts@news.example.org"));
    let to = parsed.to().and_then(|a| a.first()).unwrap();
    assert_eq!(to.name(), Some("Ann Example"));
    assert_eq!(to.address(), Some("ann@example.com"));
    assert_eq!(parsed.subject(), Some(SUBJECT));

    // The receipt is what bounces and replies quote, so it must be the header that went out;
    // its domain is the sender's, not the SMTP host's (127.0.0.1).
    assert_eq!(parsed.message_id(), Some(message_id_of(&receipt)));
    assert!(
        receipt.provider_message_id.ends_with("@news.example.org>"),
        "{}",
        receipt.provider_message_id
    );
    let header = |name: &'static str| parsed.header_raw(name).map(str::trim);
    assert_eq!(header("X-Herald-Id"), Some(m.id.to_string().as_str()));
    assert_eq!(
        header("List-Unsubscribe"),
        Some("<https://news.example.org/u/abc?t=1>")
    );
    assert_eq!(
        header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );

    // One multipart/alternative holding text/plain, then text/html (the preferred one last).
    let root = parsed.root_part();
    let root_type = root.content_type().unwrap();
    assert_eq!(
        (root_type.ctype(), root_type.subtype()),
        ("multipart", Some("alternative"))
    );
    let children = root.sub_parts().unwrap();
    assert_eq!(children.len(), 2, "two alternatives");
    let part = |i: usize| parsed.part(children[i]).unwrap();
    let kind = |i: usize| {
        let t = part(i).content_type().unwrap();
        (t.ctype().to_owned(), t.subtype().map(str::to_owned))
    };
    assert_eq!(kind(0), ("text".into(), Some("plain".into())));
    assert_eq!(kind(1), ("text".into(), Some("html".into())));
    assert_eq!(
        lines(part(0).text_contents().unwrap()),
        lines(m.content.body.as_deref().unwrap())
    );
    assert_eq!(
        part(1).text_contents().unwrap().trim_end(),
        m.content.html.as_deref().unwrap()
    );
}

#[tokio::test]
async fn the_messages_own_sender_wins_and_names_the_message_id_domain() {
    let sink = Sink::start(Some("PLAIN LOGIN")).await;
    let gateway = SmtpGateway::new(config(&sink)).unwrap();
    let mut m = email("ann@example.com");
    m.from = Some("Ops <ops@Alerts.Example.NET>".into());
    let receipt = gateway.send(&m).await.unwrap();
    let delivered = only_delivered(&sink);
    assert_eq!(delivered.mail_from, "ops@Alerts.Example.NET");
    // Domains are case-insensitive; the ID carries the ASCII (lower case) form.
    assert_eq!(
        receipt.provider_message_id,
        format!("<{}.1@alerts.example.net>", m.id.as_uuid().simple())
    );

    // An internationalised sender domain appears in its ASCII (punycode) form.
    m.from = Some("Wetterdienst <alarm@köln.example>".into());
    m.attempt = 2;
    let receipt = gateway.send(&m).await.unwrap();
    assert_eq!(
        receipt.provider_message_id,
        format!("<{}.2@xn--kln-sna.example>", m.id.as_uuid().simple())
    );
    let seen = sink.seen();
    let parsed = MessageParser::default()
        .parse(&seen.delivered[1].data)
        .unwrap();
    assert_eq!(parsed.message_id(), Some(message_id_of(&receipt)));
}

#[tokio::test]
async fn auth_login_when_the_server_offers_only_login() {
    let sink = Sink::start(Some("LOGIN")).await;
    let gateway = SmtpGateway::new(config(&sink)).unwrap();
    gateway.send(&email("ann@example.com")).await.unwrap();
    assert_eq!(
        sink.seen().logins,
        [Login {
            mechanism: "LOGIN".into(),
            username: USER.into(),
            password: PASSWORD.into(),
        }]
    );
    only_delivered(&sink);
}

#[tokio::test]
async fn a_wrong_password_delivers_nothing_and_the_message_is_retried() {
    let sink = Sink::start(Some("PLAIN LOGIN")).await;
    let mut config = config(&sink);
    config.password = Some(Secret::new("not the password"));
    let gateway = SmtpGateway::new(config).unwrap();
    let result = gateway.send(&email("ann@example.com")).await;
    // Herald's configuration is wrong, not the message: it waits for a retry (or failover).
    assert!(
        matches!(result, Err(GatewayError::Transient(_))),
        "535 is transient: {result:?}"
    );
    let seen = sink.seen();
    assert_eq!(seen.logins.len(), 1);
    assert_eq!(seen.logins[0].password, "not the password");
    assert!(seen.delivered.is_empty());
}

#[tokio::test]
async fn text_only_is_one_text_plain_part_and_dots_survive() {
    // A relay without AUTH, and a gateway with no credentials.
    let sink = Sink::start(None).await;
    let mut config = config(&sink);
    config.username = None;
    config.password = None;
    let gateway = SmtpGateway::new(config).unwrap();
    let mut m = email("ann@example.com");
    m.content.html = None;
    m.unsubscribe_url = None;
    // Short ASCII lines go out as 7bit, so these dots reach the wire as they are: a lone "."
    // would end DATA early unless lettre stuffs it and the sink unstuffs it.
    let body = "Stay inside.\r\n.\r\n..two dots\r\n.end";
    m.content.body = Some(body.into());
    gateway.send(&m).await.unwrap();

    assert!(sink.seen().logins.is_empty());
    let delivered = only_delivered(&sink);
    let parsed = MessageParser::default().parse(&delivered.data).unwrap();
    assert_eq!(parsed.subject(), Some(SUBJECT));
    assert_eq!(parsed.parts.len(), 1, "a single part, no multipart");
    let root = parsed.root_part();
    let root_type = root.content_type().unwrap();
    assert_eq!(
        (root_type.ctype(), root_type.subtype()),
        ("text", Some("plain"))
    );
    assert_eq!(lines(root.text_contents().unwrap()), lines(body));
    // No unsubscribe URL, no unsubscribe headers.
    assert_eq!(parsed.header_raw("List-Unsubscribe"), None);
    assert_eq!(parsed.header_raw("List-Unsubscribe-Post"), None);
}

#[tokio::test]
async fn sequential_sends_reuse_the_pooled_connection() {
    let sink = Sink::start(Some("PLAIN LOGIN")).await;
    let gateway = SmtpGateway::new(config(&sink)).unwrap();
    let recipients = ["a@example.com", "b@example.com", "c@example.com"];
    for to in recipients {
        gateway.send(&email(to)).await.unwrap();
        // lettre hands a used connection back to its pool from a spawned task; let that task
        // run, as other work would between two sends of a real dispatcher.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = sink.seen();
    assert_eq!(seen.delivered.len(), recipients.len());
    for (delivered, to) in seen.delivered.iter().zip(recipients) {
        assert_eq!(delivered.rcpt_to, [to]);
    }
    // One connection, one login, three messages.
    assert_eq!(seen.connections, 1, "fewer connections than messages");
    assert!(seen.delivered.iter().all(|d| d.connection == 1));
    assert_eq!(seen.logins.len(), 1);
}

#[tokio::test]
async fn refusals_map_5xx_to_permanent_and_4xx_to_transient() {
    let sink = Sink::start(Some("PLAIN LOGIN")).await;
    let gateway = SmtpGateway::new(config(&sink)).unwrap();

    match gateway.send(&email(GONE)).await {
        Err(GatewayError::Permanent { code, message }) => {
            assert_eq!(code, "550");
            assert!(message.contains("no such mailbox"), "{message}");
        }
        other => panic!("550 must be permanent: {other:?}"),
    }
    match gateway.send(&email(GREYLISTED)).await {
        Err(GatewayError::Transient(message)) => {
            assert!(message.contains("451"), "{message}");
        }
        other => panic!("451 must be transient: {other:?}"),
    }
    // Neither refusal broke the gateway: the next message goes through.
    gateway.send(&email("ann@example.com")).await.unwrap();
    let delivered = only_delivered(&sink);
    assert_eq!(delivered.rcpt_to, ["ann@example.com"]);
}

#[tokio::test]
async fn heralds_one_click_link_goes_first_in_list_unsubscribe() {
    let sink = Sink::start(Some("PLAIN LOGIN")).await;
    let gateway = SmtpGateway::new(config(&sink)).unwrap();
    let mut m = email("ann@example.com");
    m.one_click_url = Some("https://herald.example.com/u/eyJ0IjoiYWNtZSJ9.0a1b2c3d.mac".into());
    gateway.send(&m).await.unwrap();
    let delivered = only_delivered(&sink);
    let parsed = MessageParser::default().parse(&delivered.data).unwrap();
    // A long header may be folded: compare it unfolded.
    let header = |name: &'static str| {
        parsed
            .header_raw(name)
            .map(|h| h.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        header("List-Unsubscribe").as_deref(),
        Some(
            "<https://herald.example.com/u/eyJ0IjoiYWNtZSJ9.0a1b2c3d.mac>, \
             <https://news.example.org/u/abc?t=1>"
        )
    );
    assert_eq!(
        header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
}
