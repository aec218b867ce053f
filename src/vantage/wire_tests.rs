//! Round trips of every element, and refusals of malformed and oversized
//! input (a small deterministic fuzzer over mutations of good elements).

use super::*;

fn job() -> Job {
    Job {
        service: Service::XmppClient,
        domain: "good.test".into(),
        host: "xmpp.good.test".into(),
        addr: "127.0.0.1:15222".parse().unwrap(),
        timeout: Duration::from_secs(5),
        avoid: vec!["a".repeat(40)],
    }
}

fn seen() -> Answer {
    Answer::Seen(Sighting {
        transport: "tor".into(),
        exit: Some("b".repeat(40)),
        chain: vec![vec![1, 2, 3], vec![4; 1000]],
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        millis: 42,
    })
}

fn failed() -> Answer {
    Answer::Failed(Failure {
        whose: Whose::Server,
        reason: "starttls-missing".into(),
        text: "the server did not offer STARTTLS".into(),
    })
}

fn reparse(el: &Element) -> Element {
    String::from(el).parse().expect("serialized elements parse")
}

#[test]
fn job_round_trips_through_xml_text() {
    assert_eq!(parse_job(&reparse(&job_element(&job()))).unwrap(), job());
}

#[test]
fn answers_round_trip_through_xml_text() {
    for a in [seen(), failed()] {
        assert_eq!(parse_answer(&reparse(&answer_element(&a))).unwrap(), a);
    }
}

#[test]
fn documented_examples_parse() {
    let j: Element = "<probe xmlns='urn:certwatch:agent:2' service='xmpp-client' tls='starttls' domain='example.org' sni='example.org' host='xmpp.example.org' address='192.0.2.1' port='5222' timeout='60000'/>".parse().unwrap();
    assert_eq!(
        parse_job(&j).unwrap().addr,
        "192.0.2.1:5222".parse().unwrap()
    );
    let f: Element = "<failed xmlns='urn:certwatch:agent:2' whose='server' reason='other'>connection refused</failed>".parse().unwrap();
    assert!(matches!(
        parse_answer(&f).unwrap(),
        Answer::Failed(Failure {
            whose: Whose::Server,
            ..
        })
    ));
}

#[test]
fn malformed_jobs_are_refused() {
    let good = String::from(&job_element(&job()));
    for (from, to) in [
        ("service='xmpp-client'", "service='smtp'"),
        ("tls='starttls'", "tls='direct'"),
        ("port='15222'", "port='0'"),
        ("port='15222'", "port='99999'"),
        ("address='127.0.0.1'", "address='localhost'"),
        ("timeout='5000'", "timeout='0'"),
        ("timeout='5000'", "timeout='99999999'"),
        ("sni='good.test'", "sni='evil.test'"),
        ("domain='good.test'", "domain=''"),
        ("urn:certwatch:agent:2", "urn:certwatch:agent:1"),
    ] {
        assert!(good.contains(from), "{from}");
        let el: Element = good.replacen(from, to, 1).parse().unwrap();
        assert!(parse_job(&el).is_err(), "{to} accepted");
    }
    let mut many = job();
    many.avoid = vec!["c".repeat(40); MAX_AVOID];
    let mut el = job_element(&many);
    el.append_child(
        Element::builder("avoid", NS)
            .attr(name("exit"), "d".repeat(40))
            .build(),
    );
    assert!(parse_job(&el).is_err(), "too many avoids accepted");
    let long = job_element(&Job {
        host: "h".repeat(MAX_TEXT + 1),
        ..job()
    });
    assert!(parse_job(&long).is_err(), "long host accepted");
}

#[test]
fn malformed_and_oversized_answers_are_refused() {
    let too_many = Answer::Seen(Sighting {
        chain: vec![vec![1]; MAX_CERTS + 1],
        ..match seen() {
            Answer::Seen(s) => s,
            _ => unreachable!(),
        }
    });
    let too_big = Answer::Seen(Sighting {
        chain: vec![vec![7; MAX_CHAIN_BYTES / 2 + 1]; 2],
        ..match seen() {
            Answer::Seen(s) => s,
            _ => unreachable!(),
        }
    });
    let empty = Answer::Seen(Sighting {
        chain: vec![],
        ..match seen() {
            Answer::Seen(s) => s,
            _ => unreachable!(),
        }
    });
    for a in [too_many, too_big, empty] {
        assert!(parse_answer(&answer_element(&a)).is_err());
    }
    for text in [
        "<seen xmlns='urn:certwatch:agent:2' transport='tor' version='v' cipher='c' ms='1'><cert>!!notbase64</cert></seen>",
        "<seen xmlns='urn:certwatch:agent:2' transport='carrier-pigeon' version='v' cipher='c' ms='1'><cert>AQID</cert></seen>",
        "<seen xmlns='urn:certwatch:agent:2' transport='tor' exit='xyz' version='v' cipher='c' ms='1'><cert>AQID</cert></seen>",
        "<seen xmlns='urn:certwatch:agent:2' transport='tor' version='v' cipher='c' ms='1'><cert>AQID</cert><junk/></seen>",
        "<seen xmlns='urn:certwatch:agent:2' transport='tor' version='v' cipher='c'><cert>AQID</cert></seen>",
        "<failed xmlns='urn:certwatch:agent:2' whose='nobody' reason='other'>x</failed>",
        "<failed xmlns='urn:certwatch:agent:2' whose='server' reason='gremlins'>x</failed>",
        "<failed xmlns='urn:certwatch:agent:2' whose='server' reason='other'><b/></failed>",
        "<other xmlns='urn:certwatch:agent:2'/>",
    ] {
        let el: Element = text.parse().unwrap();
        assert!(parse_answer(&el).is_err(), "{text} accepted");
    }
    let long: Element = format!(
        "<failed xmlns='urn:certwatch:agent:2' whose='server' reason='other'>{}</failed>",
        "x".repeat(MAX_TEXT + 1)
    )
    .parse()
    .unwrap();
    assert!(parse_answer(&long).is_err());
}

/// A tiny deterministic generator (xorshift), so the fuzzing repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Mutates a serialized element many ways; whatever still parses as XML
/// must be accepted or refused without a panic, and what is accepted is
/// within the bounds.
#[test]
fn fuzzed_elements_never_panic_and_stay_bounded() {
    let seeds = [
        String::from(&job_element(&job())),
        String::from(&answer_element(&seen())),
        String::from(&answer_element(&failed())),
    ];
    let pieces = [
        "'",
        "<",
        ">",
        "&amp;",
        "\u{0}",
        "é",
        "99999999999999999999",
        "-1",
        "<cert>AAAA</cert>",
        "<avoid exit='aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'/>",
        " x='y'",
        "",
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut parsed = 0;
    for round in 0..4000 {
        let mut text = seeds[round % seeds.len()].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(text.len() + 1);
            let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap();
            let end = (at + rng.below(8)).min(text.len());
            let end = (end..=text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap();
            let piece = pieces[rng.below(pieces.len())];
            let piece = if rng.below(20) == 0 {
                piece.repeat(5000)
            } else {
                piece.to_owned()
            };
            text.replace_range(at..end, &piece);
        }
        let Ok(el) = text.parse::<Element>() else {
            continue;
        };
        parsed += 1;
        if let Ok(j) = parse_job(&el) {
            assert!(
                j.avoid.len() <= MAX_AVOID && j.timeout <= MAX_TIMEOUT && j.host.len() <= MAX_TEXT
            );
        }
        match parse_answer(&el) {
            Ok(Answer::Seen(s)) => {
                assert!(s.chain.len() <= MAX_CERTS);
                assert!(s.chain.iter().map(Vec::len).sum::<usize>() <= MAX_CHAIN_BYTES);
            }
            Ok(Answer::Failed(f)) => assert!(f.text.len() <= MAX_TEXT),
            Err(_) => {}
        }
    }
    assert!(
        parsed > 100,
        "the mutations left too little well-formed XML ({parsed})"
    );
}

#[test]
fn a_maximal_legal_chain_fits_the_wire_and_the_servers_stanza_limits() {
    // MAX_CERTS certificates of MAX_CHAIN_BYTES in all, sizes that make
    // base64 pad worst (1 mod 3), in an IQ result as the agent sends it.
    let each = MAX_CHAIN_BYTES / MAX_CERTS;
    let mut chain = vec![vec![0x30; (each - 1) / 3 * 3 + 1]; MAX_CERTS];
    let used: usize = chain.iter().map(Vec::len).sum();
    chain[0].extend(vec![0x30; MAX_CHAIN_BYTES - used]);
    assert_eq!(chain.iter().map(Vec::len).sum::<usize>(), MAX_CHAIN_BYTES);
    let answer = Answer::Seen(Sighting {
        chain,
        ..match seen() {
            Answer::Seen(s) => s,
            _ => unreachable!(),
        }
    });
    let el = answer_element(&answer);
    assert_eq!(parse_answer(&reparse(&el)).unwrap(), answer);
    let iq = Element::builder("iq", "jabber:client")
        .attr(name("type"), "result")
        .attr(name("id"), "job-0123456789abcdef-1")
        .attr(name("to"), "certwatch.example.org")
        .append(el)
        .build();
    let bytes = String::from(&iq).len();
    assert!(bytes <= MAX_ANSWER_BYTES, "{bytes} > {MAX_ANSWER_BYTES}");
}

#[test]
fn an_answer_is_taken_only_for_the_job_whose_endpoint_it_names() {
    let answer = seen();
    let el = reparse(&answer_element_for(&job(), &answer));
    assert_eq!(parse_answer_to(&el, &job()).unwrap(), answer);
    // The same answer, read for another job (a late answer to an old job
    // whose id came back): refused, whatever differs.
    let others = [
        Job {
            domain: "other.test".into(),
            ..job()
        },
        Job {
            host: "xmpp2.good.test".into(),
            ..job()
        },
        Job {
            addr: "127.0.0.2:15222".parse().unwrap(),
            ..job()
        },
        Job {
            addr: "127.0.0.1:15223".parse().unwrap(),
            ..job()
        },
        Job {
            service: Service::XmppServer,
            ..job()
        },
    ];
    for other in others {
        assert!(parse_answer_to(&el, &other).is_err(), "{other:?}");
    }
    // An answer that names no endpoint (version 1) is refused too.
    assert!(parse_answer_to(&answer_element(&answer), &job()).is_err());
}
