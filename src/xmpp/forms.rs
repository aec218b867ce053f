//! The XEP-0004 rendering of the commands: a command's fields as a form to
//! fill, a submitted form read back into its input, and an answer as a
//! result form (a table with `<reported/>` and `<item/>` where the answer
//! has rows). Rendering only: what a command means is in `crate::commands`.

use tokio_xmpp::minidom::rxml::NcName;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType, Field, FieldType, Option_};

use super::stanzas::{attr, clip_text, text_budget, NS_DATA};
use crate::commands::{Answer, FieldKind, Input, InputError, Spec, Table, SERVICES};

/// The form that asks for `spec`'s fields, filled with `values` where given.
pub fn ask(spec: &Spec, values: &dyn Fn(&str) -> Option<String>) -> Element {
    let fields = spec
        .fields
        .iter()
        .map(|f| {
            let mut field = match f.kind {
                FieldKind::Domain => Field::new(f.var, FieldType::TextSingle),
                FieldKind::Service => {
                    let mut field = Field::new(f.var, FieldType::ListSingle);
                    field.options = SERVICES
                        .iter()
                        .map(|(value, label)| Option_ {
                            label: Some((*label).to_owned()),
                            value: (*value).to_owned(),
                        })
                        .collect();
                    field.values = vec![SERVICES[0].0.to_owned()];
                    field
                }
            };
            field.label = Some(f.label.to_owned());
            field.required = f.required;
            if let Some(v) = values(f.var) {
                field.values = vec![v];
            }
            field
        })
        .collect();
    explicit_types(
        DataForm {
            type_: DataFormType::Form,
            title: Some(spec.title.to_owned()),
            instructions: Some(instructions(spec.help)),
            fields,
        }
        .into(),
    )
}

/// A command's help as a sentence: "Check a domain now and tell what to fix."
fn instructions(help: &str) -> String {
    let mut chars = help.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

/// Writes `type="text-single"` out, which xmpp-parsers leaves implicit (the
/// XEP-0004 default): some clients show an untyped field as read-only.
fn explicit_types(mut form: Element) -> Element {
    for f in form.children_mut().filter(|c| c.is("field", NS_DATA)) {
        if f.attr("type").is_none() {
            f.set_attr(
                tokio_xmpp::minidom::rxml::Namespace::NONE,
                NcName::try_from("type").expect("a valid name"),
                "text-single",
            );
        }
    }
    form
}

/// The values of a submitted form (`type="submit"`); None when `form` is
/// not one. Values are bounded: a field's first value, at most 1024 bytes.
pub fn submitted(form: &Element) -> Option<Vec<(String, String)>> {
    let form = DataForm::try_from(form.clone()).ok()?;
    if form.type_ != DataFormType::Submit {
        return None;
    }
    Some(
        form.fields
            .into_iter()
            .filter_map(|f| {
                let value = f.values.into_iter().next().unwrap_or_default();
                let value = if value.len() > crate::commands::MAX_BODY {
                    // Too long to be a domain: kept long enough to be refused.
                    value
                        .char_indices()
                        .take_while(|(i, _)| *i < crate::commands::MAX_BODY)
                        .map(|(_, c)| c)
                        .collect()
                } else {
                    value
                };
                Some((f.var?, value))
            })
            .collect(),
    )
}

/// `spec`'s input from submitted values.
pub fn input(spec: &Spec, values: &[(String, String)]) -> Result<Input, InputError> {
    Input::from_values(spec, |var| {
        values
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.as_str())
    })
}

/// The result form of an answer: its domain, its verdict and its text,
/// line by line (text-only clients such as profanity show only fields),
/// then, when it has rows, the table (`<reported/>` and `<item/>`, which
/// XEP-0004's schema places after the fields).
pub fn result(spec: &Spec, answer: &Answer) -> Element {
    // Text and table share the room of one text when both are sent.
    let budget = match answer.table {
        Some(_) => text_budget() / 2,
        None => text_budget(),
    };
    let mut fields = Vec::new();
    if let Some(d) = &answer.domain {
        fields.push(labelled(Field::text_single("domain", d), "Domain"));
    }
    if let Some(r) = &answer.report {
        fields.push(labelled(
            Field::text_single("verdict", r.verdict.as_str()),
            "Verdict",
        ));
    }
    let mut text = Field::new("result", FieldType::TextMulti);
    text.values = clip_text(&answer.text, budget)
        .lines()
        .map(str::to_owned)
        .collect();
    fields.push(labelled(text, "Result"));
    let mut form = explicit_types(
        DataForm {
            type_: DataFormType::Result_,
            title: Some(spec.title.to_owned()),
            instructions: None,
            fields,
        }
        .into(),
    );
    if let Some(table) = &answer.table {
        for child in table_children(table, budget) {
            form.append_child(child);
        }
    }
    form
}

fn labelled(mut f: Field, label: &str) -> Field {
    f.label = Some(label.to_owned());
    f
}

/// XEP-0004 §3.4: a result table, `<reported/>` naming the columns, one
/// `<item/>` per row, the rows within `budget` bytes. Built by hand:
/// xmpp-parsers 0.23's `DataForm` has no reported or items.
fn table_children(table: &Table, budget: usize) -> Vec<Element> {
    let field = |var: &str| attr(Element::builder("field", NS_DATA), "var", var);
    let mut reported = Element::builder("reported", NS_DATA);
    for (var, label) in &table.columns {
        reported = reported.append(attr(field(var), "label", *label).build());
    }
    let mut out = vec![reported.build()];
    let mut used = 0;
    for row in &table.rows {
        used += row.iter().map(String::len).sum::<usize>() + 64 * row.len();
        if used > budget {
            break;
        }
        let mut item = Element::builder("item", NS_DATA);
        for ((var, _), value) in table.columns.iter().zip(row) {
            item = item.append(
                field(var)
                    .append(
                        Element::builder("value", NS_DATA)
                            .append(value.as_str())
                            .build(),
                    )
                    .build(),
            );
        }
        out.push(item.build());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::spec;
    use std::str::FromStr;

    fn roundtrip(e: &Element) -> Element {
        let back = Element::from_str(&String::from(e)).unwrap();
        assert_eq!(&back, e);
        back
    }

    #[test]
    fn check_asks_for_a_domain_and_a_service() {
        let form = roundtrip(&ask(spec("check").unwrap(), &|_| None));
        let parsed = DataForm::try_from(form.clone()).unwrap();
        assert_eq!(parsed.type_, DataFormType::Form);
        let domain = &parsed.fields[0];
        assert_eq!(
            (domain.var.as_deref(), &domain.type_, domain.required),
            (Some("domain"), &FieldType::TextSingle, true)
        );
        assert!(
            String::from(&form).contains("type=\"text-single\"")
                || String::from(&form).contains("type='text-single'")
        );
        let service = &parsed.fields[1];
        assert_eq!(service.type_, FieldType::ListSingle);
        let options: Vec<&str> = service.options.iter().map(|o| o.value.as_str()).collect();
        assert_eq!(options, ["all", "client", "server"]);
        assert_eq!(service.values, ["all"]);
        let filled = ask(spec("status").unwrap(), &|v| {
            (v == "domain").then(|| "bad..x".into())
        });
        assert!(String::from(&filled).contains("bad..x"));
    }

    #[test]
    fn a_submitted_form_is_read_and_checked() {
        let form = Element::from_str(
            "<x xmlns='jabber:x:data' type='submit'>\
             <field var='domain'><value>Example.ORG</value></field>\
             <field var='service'><value>server</value></field></x>",
        )
        .unwrap();
        let values = submitted(&form).unwrap();
        let input = input(spec("check").unwrap(), &values).unwrap();
        assert_eq!(input.domain.unwrap().as_str(), "example.org");
        assert_eq!(input.service, crate::vocab::ServiceSet::Server);
        let not_submit = Element::from_str("<x xmlns='jabber:x:data' type='form'/>").unwrap();
        assert!(submitted(&not_submit).is_none());
        let empty = Element::from_str("<x xmlns='jabber:x:data' type='submit'/>").unwrap();
        assert_eq!(
            super::input(spec("status").unwrap(), &submitted(&empty).unwrap()),
            Err(InputError::Missing("domain"))
        );
    }

    #[test]
    fn a_table_answer_is_a_reported_table_and_text_answers_are_lines() {
        let answer = Answer {
            table: Some(Table {
                columns: vec![("domain", "Domain"), ("state", "Last state")],
                rows: vec![
                    vec!["a.example".into(), "ok".into()],
                    vec!["b.example".into(), "mismatch".into()],
                ],
            }),
            ..Answer::done("Your subscriptions (2):")
        };
        let x = roundtrip(&result(spec("list").unwrap(), &answer));
        // The text first, for clients that show no tables.
        let first = x.children().find(|c| c.name() == "field").unwrap();
        assert_eq!(first.attr("var"), Some("result"));
        assert!(String::from(first).contains("Your subscriptions (2):"));
        let reported = x.get_child("reported", NS_DATA).unwrap();
        assert_eq!(reported.children().count(), 2);
        let items: Vec<&Element> = x.children().filter(|c| c.name() == "item").collect();
        assert_eq!(items.len(), 2);
        assert!(String::from(items[1]).contains("mismatch"));
        let text = Answer::done("line one\nline two");
        let x = roundtrip(&result(spec("status").unwrap(), &text));
        let parsed = DataForm::try_from(x).unwrap();
        assert_eq!(parsed.type_, DataFormType::Result_);
        assert_eq!(parsed.fields[0].values, ["line one", "line two"]);
    }
}
