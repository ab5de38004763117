//! The KQL subset the product emits (contracts §2): a tokenizer, a recursive-descent parser and an
//! evaluator over row groups (one logical row per minute of an interval, never materialised until the
//! result needs rows). Anything outside the subset is a `KqlError`, answered as HTTP 400.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::clock::{MINUTE_MS, SimMillis, iso, parse_iso};

/// Deepest nesting of parenthesised predicates `parse` accepts. The parser recurses three frames per
/// level, so without a bound a few thousand `(` overflow the stack and kill the simulator; the product's
/// queries nest two levels at most.
pub const MAX_NESTING_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KqlError {
    #[error("Syntax error at position {pos}: {message}")]
    Syntax { pos: usize, message: String },
    #[error(
        "Syntax error at position {pos}: parentheses nest too deep (the nesting depth limit is {limit} levels)"
    )]
    TooDeep { pos: usize, limit: usize },
    #[error("{0}")]
    Semantic(String),
}

fn syntax(pos: usize, message: impl Into<String>) -> KqlError {
    KqlError::Syntax {
        pos,
        message: message.into(),
    }
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    /// Raw text of `datetime(...)` without quotes.
    DateLit(String),
    Pipe,
    Comma,
    LParen,
    RParen,
    Assign,
    EqEq,
    NotEq,
    EqTilde,
    NotTilde,
    Gt,
    Ge,
    Lt,
    Le,
    InCi,
    NotIn,
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, KqlError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out: Vec<(usize, Tok)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let tok = match two.as_str() {
            "==" => Some(Tok::EqEq),
            "!=" => Some(Tok::NotEq),
            "=~" => Some(Tok::EqTilde),
            "!~" => Some(Tok::NotTilde),
            ">=" => Some(Tok::Ge),
            "<=" => Some(Tok::Le),
            _ => None,
        };
        if let Some(t) = tok {
            out.push((start, t));
            i += 2;
            continue;
        }
        if c == '!' {
            let rest: String = chars[i + 1..(i + 3).min(chars.len())].iter().collect();
            if rest == "in" && !chars.get(i + 3).copied().is_some_and(is_ident_char) {
                out.push((start, Tok::NotIn));
                i += 3;
                continue;
            }
            return Err(syntax(start, "unexpected '!'"));
        }
        let single = match c {
            '|' => Some(Tok::Pipe),
            ',' => Some(Tok::Comma),
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '=' => Some(Tok::Assign),
            '>' => Some(Tok::Gt),
            '<' => Some(Tok::Lt),
            _ => None,
        };
        if let Some(t) = single {
            out.push((start, t));
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(syntax(start, "unterminated string literal")),
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        match chars.get(i + 1) {
                            Some(&e) => s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            }),
                            None => return Err(syntax(i, "unterminated escape")),
                        }
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push((start, Tok::Str(s)));
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let n = text
                .parse::<i64>()
                .map_err(|_| syntax(start, format!("number {text} is out of range")))?;
            out.push((start, Tok::Int(n)));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word == "in" && chars.get(i) == Some(&'~') {
                out.push((start, Tok::InCi));
                i += 1;
                continue;
            }
            if word == "datetime" {
                // datetime(2025-01-01T00:00:00Z): the literal is raw text up to ')'.
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if chars.get(j) == Some(&'(') {
                    let close = chars[j..]
                        .iter()
                        .position(|&x| x == ')')
                        .ok_or_else(|| syntax(j, "datetime( has no closing ')'"))?;
                    let raw: String = chars[j + 1..j + close].iter().collect();
                    let raw = raw
                        .trim()
                        .trim_matches(|q| q == '"' || q == '\'')
                        .to_string();
                    out.push((start, Tok::DateLit(raw)));
                    i = j + close + 1;
                    continue;
                }
            }
            out.push((start, Tok::Ident(word)));
            continue;
        }
        return Err(syntax(start, format!("unexpected character '{c}'")));
    }
    Ok(out)
}

// ---------------------------------------------------------------- AST

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub table: String,
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Where(Pred),
    Summarize { aggs: Vec<Agg>, by: Vec<String> },
    Count,
    Take(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    Count,
    Max,
    Min,
    DCount,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    pub name: String,
    pub func: AggFn,
    pub column: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeExpr {
    Ago(i64),
    At(SimMillis),
    Now,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOp {
    Eq,
    Ne,
    EqCi,
    NeCi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InOp {
    In,
    InCi,
    NotIn,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    And(Vec<Pred>),
    Or(Vec<Pred>),
    Time(Cmp, TimeExpr),
    Str(String, StrOp, String),
    In(String, InOp, Vec<String>),
}

// ---------------------------------------------------------------- parser

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
    /// Parenthesised predicates open around the current token.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|t| t.0).unwrap_or(self.len)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.1.clone());
        self.pos += 1;
        t
    }
    fn expect(&mut self, want: Tok, what: &str) -> Result<(), KqlError> {
        let at = self.at();
        match self.next() {
            Some(t) if t == want => Ok(()),
            other => Err(syntax(
                at,
                format!("expected {what}, found {}", describe(other.as_ref())),
            )),
        }
    }
    fn ident(&mut self, what: &str) -> Result<String, KqlError> {
        let at = self.at();
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            other => Err(syntax(
                at,
                format!("expected {what}, found {}", describe(other.as_ref())),
            )),
        }
    }
    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == kw)
    }
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "end of query".into(),
        Some(Tok::Ident(s)) => format!("'{s}'"),
        Some(Tok::Str(s)) => format!("string \"{s}\""),
        Some(Tok::Int(n)) => format!("number {n}"),
        Some(other) => format!("{other:?}"),
    }
}

/// Parse a query of the subset.
pub fn parse(src: &str) -> Result<Query, KqlError> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        len: src.len(),
        depth: 0,
    };
    let table = p.ident("a table name")?;
    let mut ops = Vec::new();
    while p.peek().is_some() {
        p.expect(Tok::Pipe, "'|'")?;
        let at = p.at();
        let op = p.ident("an operator (where, summarize, count, take)")?;
        ops.push(match op.as_str() {
            "where" => Op::Where(parse_and(&mut p)?),
            "summarize" => parse_summarize(&mut p)?,
            "count" => Op::Count,
            "take" | "limit" => match p.next() {
                Some(Tok::Int(n)) if n >= 0 => Op::Take(n as u64),
                other => return Err(syntax(at, format!("take needs a count, found {}", describe(other.as_ref())))),
            },
            other => return Err(syntax(at, format!("operator '{other}' is not supported (supported: where, summarize, count, take)"))),
        });
    }
    Ok(Query { table, ops })
}

fn parse_and(p: &mut Parser) -> Result<Pred, KqlError> {
    let mut preds = vec![parse_pred(p)?];
    while p.keyword("and") {
        p.next();
        preds.push(parse_pred(p)?);
    }
    Ok(if preds.len() == 1 {
        preds.remove(0)
    } else {
        Pred::And(preds)
    })
}

fn parse_or(p: &mut Parser) -> Result<Pred, KqlError> {
    let mut preds = vec![parse_and(p)?];
    while p.keyword("or") {
        p.next();
        preds.push(parse_and(p)?);
    }
    Ok(if preds.len() == 1 {
        preds.remove(0)
    } else {
        Pred::Or(preds)
    })
}

fn parse_pred(p: &mut Parser) -> Result<Pred, KqlError> {
    if p.peek() == Some(&Tok::LParen) {
        if p.depth >= MAX_NESTING_DEPTH {
            return Err(KqlError::TooDeep {
                pos: p.at(),
                limit: MAX_NESTING_DEPTH,
            });
        }
        p.depth += 1;
        p.next();
        let inner = parse_or(p)?;
        p.expect(Tok::RParen, "')'")?;
        p.depth -= 1;
        return Ok(inner);
    }
    let col = p.ident("a column name or '('")?;
    let at = p.at();
    let op = p.next();
    if col == "TimeGenerated" {
        let cmp = match op {
            Some(Tok::Gt) => Cmp::Gt,
            Some(Tok::Ge) => Cmp::Ge,
            Some(Tok::Lt) => Cmp::Lt,
            Some(Tok::Le) => Cmp::Le,
            other => {
                return Err(syntax(
                    at,
                    format!(
                        "TimeGenerated must be compared with >, >=, <, <=; found {}",
                        describe(other.as_ref())
                    ),
                ));
            }
        };
        return Ok(Pred::Time(cmp, parse_time(p)?));
    }
    match op {
        Some(t @ (Tok::EqEq | Tok::NotEq | Tok::EqTilde | Tok::NotTilde)) => {
            let sop = match t {
                Tok::EqEq => StrOp::Eq,
                Tok::NotEq => StrOp::Ne,
                Tok::EqTilde => StrOp::EqCi,
                _ => StrOp::NeCi,
            };
            let at = p.at();
            match p.next() {
                Some(Tok::Str(s)) => Ok(Pred::Str(col, sop, s)),
                other => Err(syntax(
                    at,
                    format!(
                        "expected a string literal, found {}",
                        describe(other.as_ref())
                    ),
                )),
            }
        }
        Some(t @ (Tok::InCi | Tok::NotIn)) => Ok(Pred::In(
            col,
            if t == Tok::InCi {
                InOp::InCi
            } else {
                InOp::NotIn
            },
            parse_list(p)?,
        )),
        Some(Tok::Ident(w)) if w == "in" => Ok(Pred::In(col, InOp::In, parse_list(p)?)),
        other => Err(syntax(
            at,
            format!(
                "expected ==, !=, =~, !~, in, in~ or !in after '{col}', found {}",
                describe(other.as_ref())
            ),
        )),
    }
}

fn parse_list(p: &mut Parser) -> Result<Vec<String>, KqlError> {
    p.expect(Tok::LParen, "'(' after in")?;
    let mut out = Vec::new();
    loop {
        let at = p.at();
        match p.next() {
            Some(Tok::Str(s)) => out.push(s),
            other => {
                return Err(syntax(
                    at,
                    format!(
                        "expected a string literal in the list, found {}",
                        describe(other.as_ref())
                    ),
                ));
            }
        }
        match p.next() {
            Some(Tok::Comma) => continue,
            Some(Tok::RParen) => return Ok(out),
            other => {
                return Err(syntax(
                    p.at(),
                    format!("expected ',' or ')', found {}", describe(other.as_ref())),
                ));
            }
        }
    }
}

fn parse_time(p: &mut Parser) -> Result<TimeExpr, KqlError> {
    let at = p.at();
    match p.next() {
        Some(Tok::DateLit(raw)) => parse_iso(&raw)
            .map(TimeExpr::At)
            .ok_or_else(|| syntax(at, format!("'{raw}' is not an ISO-8601 datetime"))),
        Some(Tok::Ident(f)) if f == "now" => {
            p.expect(Tok::LParen, "'('")?;
            p.expect(Tok::RParen, "')'")?;
            Ok(TimeExpr::Now)
        }
        Some(Tok::Ident(f)) if f == "ago" => {
            p.expect(Tok::LParen, "'(' after ago")?;
            let at = p.at();
            let n = match p.next() {
                Some(Tok::Int(n)) => n,
                other => {
                    return Err(syntax(
                        at,
                        format!(
                            "ago() needs a timespan like 1d, found {}",
                            describe(other.as_ref())
                        ),
                    ));
                }
            };
            let at = p.at();
            let unit = match p.next() {
                Some(Tok::Ident(u)) => u,
                other => {
                    return Err(syntax(
                        at,
                        format!(
                            "timespan unit must be s, m, h or d, found {}",
                            describe(other.as_ref())
                        ),
                    ));
                }
            };
            let ms = match unit.as_str() {
                "s" => 1_000,
                "m" => MINUTE_MS,
                "h" => 3_600_000,
                "d" => 86_400_000,
                other => {
                    return Err(syntax(
                        at,
                        format!("timespan unit must be s, m, h or d, not '{other}'"),
                    ));
                }
            };
            p.expect(Tok::RParen, "')'")?;
            Ok(TimeExpr::Ago(n.saturating_mul(ms)))
        }
        other => Err(syntax(
            at,
            format!(
                "expected ago(...), datetime(...) or now(), found {}",
                describe(other.as_ref())
            ),
        )),
    }
}

fn parse_summarize(p: &mut Parser) -> Result<Op, KqlError> {
    let mut aggs = Vec::new();
    loop {
        let at = p.at();
        let first = p.ident("an aggregate")?;
        let (name, func) = if p.peek() == Some(&Tok::Assign) {
            p.next();
            (Some(first), p.ident("an aggregate function")?)
        } else {
            (None, first)
        };
        let f = match func.as_str() {
            "count" => AggFn::Count,
            "max" => AggFn::Max,
            "min" => AggFn::Min,
            "dcount" => AggFn::DCount,
            other => {
                return Err(syntax(
                    at,
                    format!("aggregate '{other}' is not supported (count, max, min, dcount)"),
                ));
            }
        };
        p.expect(Tok::LParen, "'('")?;
        let column = if f == AggFn::Count {
            None
        } else {
            Some(p.ident("a column")?)
        };
        p.expect(Tok::RParen, "')'")?;
        let name = name.unwrap_or_else(|| match (f, &column) {
            (AggFn::Count, _) => "count_".into(),
            (AggFn::Max, Some(c)) => format!("max_{c}"),
            (AggFn::Min, Some(c)) => format!("min_{c}"),
            (_, Some(c)) => format!("dcount_{c}"),
            (_, None) => "value".into(),
        });
        aggs.push(Agg {
            name,
            func: f,
            column,
        });
        if p.peek() == Some(&Tok::Comma) {
            p.next();
            continue;
        }
        break;
    }
    let mut by = Vec::new();
    if p.keyword("by") {
        p.next();
        loop {
            by.push(p.ident("a column after by")?);
            if p.peek() == Some(&Tok::Comma) {
                p.next();
                continue;
            }
            break;
        }
    }
    if let Some(t) = p.peek()
        && *t != Tok::Pipe
    {
        return Err(syntax(
            p.at(),
            format!("unexpected {} after summarize", describe(Some(t))),
        ));
    }
    Ok(Op::Summarize { aggs, by })
}

// ---------------------------------------------------------------- evaluation

/// Rows sharing every column but time: one row per minute `k` in `[first, end)` (TimeGenerated = k·60 s).
#[derive(Debug, Clone)]
pub struct RowGroup {
    pub table: String,
    pub cols: BTreeMap<String, String>,
    pub first: i64,
    pub end: i64,
}

/// The string columns of a table (TimeGenerated is implicit).
pub type Schema<'a> = &'a dyn Fn(&str) -> Option<Vec<&'static str>>;

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Str(String),
    Long(i64),
    Time(SimMillis),
    Null,
}

impl Cell {
    fn json(&self) -> Value {
        match self {
            Cell::Str(s) => json!(s),
            Cell::Long(n) => json!(n),
            Cell::Time(t) => json!(iso(*t)),
            Cell::Null => Value::Null,
        }
    }
    fn text(&self) -> String {
        match self {
            Cell::Str(s) => s.clone(),
            Cell::Long(n) => n.to_string(),
            Cell::Time(t) => iso(*t),
            Cell::Null => String::new(),
        }
    }
}

struct Table {
    cols: Vec<(String, &'static str)>,
    rows: Vec<Vec<Cell>>,
}

type Ranges = Vec<(i64, i64)>;

fn intersect(a: &Ranges, b: &Ranges) -> Ranges {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let (s, e) = (x.0.max(y.0), x.1.min(y.1));
            if s < e {
                out.push((s, e));
            }
        }
    }
    normalize(out)
}

fn normalize(mut v: Ranges) -> Ranges {
    v.sort();
    let mut out: Ranges = Vec::new();
    for (s, e) in v {
        if s >= e {
            continue;
        }
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn time_of(t: TimeExpr, now: SimMillis) -> SimMillis {
    match t {
        TimeExpr::Ago(d) => now - d,
        TimeExpr::At(t) => t,
        TimeExpr::Now => now,
    }
}

/// Minutes k (as a range) with `k·60 s cmp t`.
fn time_range(cmp: Cmp, t: SimMillis) -> (i64, i64) {
    let floor = t.div_euclid(MINUTE_MS);
    let ceil = floor + (t.rem_euclid(MINUTE_MS) != 0) as i64;
    match cmp {
        Cmp::Gt => (floor + 1, i64::MAX),
        Cmp::Ge => (ceil, i64::MAX),
        Cmp::Lt => (i64::MIN, ceil),
        Cmp::Le => (i64::MIN, floor + 1),
    }
}

fn str_match(op: StrOp, v: &str, lit: &str) -> bool {
    match op {
        StrOp::Eq => v == lit,
        StrOp::Ne => v != lit,
        StrOp::EqCi => v.eq_ignore_ascii_case(lit),
        StrOp::NeCi => !v.eq_ignore_ascii_case(lit),
    }
}

fn in_match(op: InOp, v: &str, list: &[String]) -> bool {
    match op {
        InOp::In => list.iter().any(|x| x == v),
        InOp::InCi => list.iter().any(|x| x.eq_ignore_ascii_case(v)),
        InOp::NotIn => !list.iter().any(|x| x == v),
    }
}

fn check_pred_columns(p: &Pred, has: &dyn Fn(&str) -> bool) -> Result<(), KqlError> {
    match p {
        Pred::And(v) | Pred::Or(v) => v.iter().try_for_each(|x| check_pred_columns(x, has)),
        Pred::Time(..) => {
            if has("TimeGenerated") {
                Ok(())
            } else {
                Err(KqlError::Semantic(
                    "Failed to resolve column 'TimeGenerated'".into(),
                ))
            }
        }
        Pred::Str(c, ..) | Pred::In(c, ..) => {
            if has(c) {
                Ok(())
            } else {
                Err(KqlError::Semantic(format!(
                    "Failed to resolve scalar expression named '{c}'"
                )))
            }
        }
    }
}

fn eval_group(p: &Pred, g: &RowGroup, now: SimMillis) -> Ranges {
    let all = vec![(g.first, g.end)];
    match p {
        Pred::And(v) => v
            .iter()
            .fold(all, |acc, x| intersect(&acc, &eval_group(x, g, now))),
        Pred::Or(v) => normalize(v.iter().flat_map(|x| eval_group(x, g, now)).collect()),
        Pred::Time(cmp, t) => intersect(&all, &vec![time_range(*cmp, time_of(*t, now))]),
        Pred::Str(c, op, lit) => {
            if str_match(*op, g.cols.get(c).map(String::as_str).unwrap_or(""), lit) {
                all
            } else {
                Vec::new()
            }
        }
        Pred::In(c, op, list) => {
            if in_match(*op, g.cols.get(c).map(String::as_str).unwrap_or(""), list) {
                all
            } else {
                Vec::new()
            }
        }
    }
}

fn eval_row(p: &Pred, t: &Table, row: &[Cell], now: SimMillis) -> bool {
    let col = |c: &str| t.cols.iter().position(|x| x.0 == c).map(|i| &row[i]);
    match p {
        Pred::And(v) => v.iter().all(|x| eval_row(x, t, row, now)),
        Pred::Or(v) => v.iter().any(|x| eval_row(x, t, row, now)),
        Pred::Time(cmp, te) => match col("TimeGenerated") {
            Some(Cell::Time(v)) => {
                let at = time_of(*te, now);
                match cmp {
                    Cmp::Gt => *v > at,
                    Cmp::Ge => *v >= at,
                    Cmp::Lt => *v < at,
                    Cmp::Le => *v <= at,
                }
            }
            _ => false,
        },
        Pred::Str(c, op, lit) => col(c).is_some_and(|v| str_match(*op, &v.text(), lit)),
        Pred::In(c, op, list) => col(c).is_some_and(|v| in_match(*op, &v.text(), list)),
    }
}

/// Cap on rows a result may expand to (Log Analytics returns at most 500,000).
pub const MAX_ROWS: usize = 500_000;

enum Data {
    Groups(Vec<(RowGroup, Ranges)>, Vec<&'static str>),
    Table(Table),
}

fn minutes(r: &Ranges) -> i64 {
    r.iter().map(|(s, e)| e - s).sum()
}

fn expand(groups: &[(RowGroup, Ranges)], cols: &[&'static str], limit: usize) -> Table {
    let mut t = Table {
        cols: vec![("TimeGenerated".to_string(), "datetime")],
        rows: Vec::new(),
    };
    t.cols
        .extend(cols.iter().map(|c| (c.to_string(), "string")));
    'outer: for (g, ranges) in groups {
        for (s, e) in ranges {
            for k in *s..*e {
                if t.rows.len() >= limit {
                    break 'outer;
                }
                let mut row = vec![Cell::Time(k * MINUTE_MS)];
                row.extend(
                    cols.iter()
                        .map(|c| Cell::Str(g.cols.get(*c).cloned().unwrap_or_default())),
                );
                t.rows.push(row);
            }
        }
    }
    t
}

/// Evaluate `q` over `groups`; `schema` gives each known table's string columns.
pub fn evaluate(
    q: &Query,
    groups: &[RowGroup],
    now: SimMillis,
    schema: Schema,
) -> Result<Value, KqlError> {
    let cols = schema(&q.table).ok_or_else(|| {
        KqlError::Semantic(format!(
            "Failed to resolve table or column expression named '{}'",
            q.table
        ))
    })?;
    let mine: Vec<(RowGroup, Ranges)> = groups
        .iter()
        .filter(|g| g.table == q.table)
        .map(|g| (g.clone(), vec![(g.first, g.end)]))
        .collect();
    let mut data = Data::Groups(mine, cols);
    for op in &q.ops {
        data = match (op, data) {
            (Op::Where(p), Data::Groups(gs, cols)) => {
                check_pred_columns(p, &|c| c == "TimeGenerated" || cols.contains(&c))?;
                let gs = gs
                    .into_iter()
                    .map(|(g, r)| {
                        let keep = intersect(&r, &eval_group(p, &g, now));
                        (g, keep)
                    })
                    .filter(|(_, r)| !r.is_empty())
                    .collect();
                Data::Groups(gs, cols)
            }
            (Op::Where(p), Data::Table(t)) => {
                check_pred_columns(p, &|c| t.cols.iter().any(|x| x.0 == c))?;
                let rows = t
                    .rows
                    .iter()
                    .filter(|r| eval_row(p, &t, r, now))
                    .cloned()
                    .collect();
                Data::Table(Table { cols: t.cols, rows })
            }
            (Op::Count, Data::Groups(gs, _)) => Data::Table(Table {
                cols: vec![("Count".into(), "long")],
                rows: vec![vec![Cell::Long(gs.iter().map(|(_, r)| minutes(r)).sum())]],
            }),
            (Op::Count, Data::Table(t)) => Data::Table(Table {
                cols: vec![("Count".into(), "long")],
                rows: vec![vec![Cell::Long(t.rows.len() as i64)]],
            }),
            (Op::Take(n), Data::Groups(gs, cols)) => {
                Data::Table(expand(&gs, &cols, (*n as usize).min(MAX_ROWS)))
            }
            (Op::Take(n), Data::Table(mut t)) => {
                t.rows.truncate(*n as usize);
                Data::Table(t)
            }
            (Op::Summarize { aggs, by }, Data::Groups(gs, cols)) => {
                if by.iter().any(|c| c == "TimeGenerated") {
                    // Expand to rows first: summarizing by time needs one key per minute.
                    let t = expand(&gs, &cols, MAX_ROWS);
                    Data::Table(summarize_table(&t, aggs, by)?)
                } else {
                    Data::Table(summarize_groups(&gs, &cols, aggs, by)?)
                }
            }
            (Op::Summarize { aggs, by }, Data::Table(t)) => {
                Data::Table(summarize_table(&t, aggs, by)?)
            }
        };
    }
    let table = match data {
        Data::Groups(gs, cols) => expand(&gs, &cols, MAX_ROWS),
        Data::Table(t) => t,
    };
    Ok(json!({
        "name": "PrimaryResult",
        "columns": table.cols.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
        "rows": table.rows.iter().map(|r| r.iter().map(Cell::json).collect::<Vec<_>>()).collect::<Vec<_>>(),
    }))
}

#[derive(Default)]
struct Acc {
    count: i64,
    max: Option<Cell>,
    min: Option<Cell>,
    distinct: BTreeSet<String>,
}

fn better(a: &Cell, b: &Cell, want_max: bool) -> bool {
    let ord = match (a, b) {
        (Cell::Time(x), Cell::Time(y)) => x.cmp(y),
        (Cell::Long(x), Cell::Long(y)) => x.cmp(y),
        _ => a.text().cmp(&b.text()),
    };
    if want_max { ord.is_gt() } else { ord.is_lt() }
}

fn agg_type(a: &Agg, col_type: &dyn Fn(&str) -> &'static str) -> &'static str {
    match (a.func, &a.column) {
        (AggFn::Count | AggFn::DCount, _) => "long",
        (_, Some(c)) => col_type(c),
        _ => "string",
    }
}

fn finish(aggs: &[Agg], accs: &[Acc]) -> Vec<Cell> {
    aggs.iter()
        .zip(accs)
        .map(|(a, acc)| match a.func {
            AggFn::Count => Cell::Long(acc.count),
            AggFn::DCount => Cell::Long(acc.distinct.len() as i64),
            AggFn::Max => acc.max.clone().unwrap_or(Cell::Null),
            AggFn::Min => acc.min.clone().unwrap_or(Cell::Null),
        })
        .collect()
}

fn feed(acc: &mut Acc, a: &Agg, count: i64, value: Option<Cell>, min_value: Option<Cell>) {
    match a.func {
        AggFn::Count => acc.count += count,
        AggFn::DCount => {
            if let Some(v) = value {
                acc.distinct.insert(v.text());
            }
        }
        AggFn::Max => {
            if let Some(v) = value
                && acc.max.as_ref().is_none_or(|m| better(&v, m, true))
            {
                acc.max = Some(v);
            }
        }
        AggFn::Min => {
            if let Some(v) = min_value
                && acc.min.as_ref().is_none_or(|m| better(&v, m, false))
            {
                acc.min = Some(v);
            }
        }
    }
}

fn summarize_groups(
    gs: &[(RowGroup, Ranges)],
    cols: &[&'static str],
    aggs: &[Agg],
    by: &[String],
) -> Result<Table, KqlError> {
    let known = |c: &str| c == "TimeGenerated" || cols.contains(&c);
    for c in by
        .iter()
        .chain(aggs.iter().filter_map(|a| a.column.as_ref()))
    {
        if !known(c) {
            return Err(KqlError::Semantic(format!(
                "Failed to resolve scalar expression named '{c}'"
            )));
        }
    }
    let col_type = |c: &str| {
        if c == "TimeGenerated" {
            "datetime"
        } else {
            "string"
        }
    };
    let mut keys: BTreeMap<Vec<String>, Vec<Acc>> = BTreeMap::new();
    if by.is_empty() {
        keys.insert(Vec::new(), aggs.iter().map(|_| Acc::default()).collect());
    }
    for (g, r) in gs {
        let n = minutes(r);
        if n == 0 {
            continue;
        }
        let key: Vec<String> = by
            .iter()
            .map(|c| g.cols.get(c).cloned().unwrap_or_default())
            .collect();
        let accs = keys
            .entry(key)
            .or_insert_with(|| aggs.iter().map(|_| Acc::default()).collect());
        for (a, acc) in aggs.iter().zip(accs.iter_mut()) {
            let (hi, lo) = match a.column.as_deref() {
                Some("TimeGenerated") => (
                    r.last().map(|x| Cell::Time((x.1 - 1) * MINUTE_MS)),
                    r.first().map(|x| Cell::Time(x.0 * MINUTE_MS)),
                ),
                Some(c) => {
                    let v = Cell::Str(g.cols.get(c).cloned().unwrap_or_default());
                    (Some(v.clone()), Some(v))
                }
                None => (None, None),
            };
            feed(acc, a, n, hi, lo);
        }
    }
    let mut t = Table {
        cols: by.iter().map(|c| (c.clone(), col_type(c))).collect(),
        rows: Vec::new(),
    };
    t.cols.extend(
        aggs.iter()
            .map(|a| (a.name.clone(), agg_type(a, &col_type))),
    );
    for (key, accs) in keys {
        let mut row: Vec<Cell> = key.into_iter().map(Cell::Str).collect();
        row.extend(finish(aggs, &accs));
        t.rows.push(row);
    }
    Ok(t)
}

fn summarize_table(t: &Table, aggs: &[Agg], by: &[String]) -> Result<Table, KqlError> {
    let idx = |c: &str| {
        t.cols.iter().position(|x| x.0 == c).ok_or_else(|| {
            KqlError::Semantic(format!("Failed to resolve scalar expression named '{c}'"))
        })
    };
    let by_idx: Vec<usize> = by.iter().map(|c| idx(c)).collect::<Result<_, _>>()?;
    let agg_idx: Vec<Option<usize>> = aggs
        .iter()
        .map(|a| a.column.as_deref().map(idx).transpose())
        .collect::<Result<_, _>>()?;
    let col_type = |c: &str| {
        t.cols
            .iter()
            .find(|x| x.0 == c)
            .map(|x| x.1)
            .unwrap_or("string")
    };
    let mut keys: BTreeMap<Vec<String>, (Vec<Cell>, Vec<Acc>)> = BTreeMap::new();
    if by.is_empty() {
        keys.insert(
            Vec::new(),
            (Vec::new(), aggs.iter().map(|_| Acc::default()).collect()),
        );
    }
    for row in &t.rows {
        let key: Vec<String> = by_idx.iter().map(|i| row[*i].text()).collect();
        let entry = keys.entry(key).or_insert_with(|| {
            (
                by_idx.iter().map(|i| row[*i].clone()).collect(),
                aggs.iter().map(|_| Acc::default()).collect(),
            )
        });
        for ((a, acc), ai) in aggs.iter().zip(entry.1.iter_mut()).zip(&agg_idx) {
            let v = ai.map(|i| row[i].clone());
            feed(acc, a, 1, v.clone(), v);
        }
    }
    let mut out = Table {
        cols: by.iter().map(|c| (c.clone(), col_type(c))).collect(),
        rows: Vec::new(),
    };
    out.cols.extend(
        aggs.iter()
            .map(|a| (a.name.clone(), agg_type(a, &col_type))),
    );
    for (_, (key_cells, accs)) in keys {
        let mut row = key_cells;
        row.extend(finish(aggs, &accs));
        out.rows.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(t: &str) -> Option<Vec<&'static str>> {
        match t {
            "Heartbeat" => Some(vec!["Computer", "_ResourceId", "Category", "OSType"]),
            "Event" => Some(vec!["Computer", "_ResourceId", "EventLog"]),
            _ => None,
        }
    }

    fn g(table: &str, computer: &str, cat: &str, first: i64, end: i64) -> RowGroup {
        let mut cols = BTreeMap::new();
        cols.insert("Computer".to_string(), computer.to_string());
        cols.insert("Category".to_string(), cat.to_string());
        cols.insert("_ResourceId".to_string(), String::new());
        cols.insert("OSType".to_string(), "Linux".to_string());
        RowGroup {
            table: table.into(),
            cols,
            first,
            end,
        }
    }

    #[test]
    fn accepts_the_product_queries() {
        for q in [
            crate::inventory::HEARTBEAT_QUERY,
            "Heartbeat | where TimeGenerated > ago(1d) | summarize count() by Computer, _ResourceId, Category, OSType",
            "Heartbeat | where TimeGenerated >= datetime(2025-06-02T08:00:00Z) and Category == 'Azure Monitor Agent' | summarize LastSeen = max(TimeGenerated) by Computer",
            "Event | where EventLog in~ (\"system\", 'application') and (Computer == 'a' or Computer =~ 'B') | count",
            "Heartbeat | where Computer !in ('x') | summarize dcount(Computer), min(TimeGenerated) | take 5",
            "Heartbeat | where TimeGenerated <= now() | take 10",
        ] {
            parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn rejects_queries_outside_the_subset() {
        for q in [
            "Heartbeat | project Computer",
            "Heartbeat | where TimeGenerated > ago(1w)",
            "Heartbeat | where Computer == 5",
            "Heartbeat | summarize make_set(Category) by Computer",
            "Heartbeat | where (Computer == 'a' or",
            "Heartbeat | where Computer contains 'a'",
            "Heartbeat | extend x = 1",
            "Heartbeat | where TimeGenerated == ago(1d)",
            "| count",
            "Heartbeat | where Computer == 'unterminated",
        ] {
            assert!(parse(q).is_err(), "{q} should be rejected");
        }
    }

    #[test]
    fn summarize_counts_minutes_and_where_clips_time() {
        let now = 100 * MINUTE_MS;
        let groups = vec![
            g("Heartbeat", "a", "Direct Agent", 0, 100),
            g("Heartbeat", "a", "Azure Monitor Agent", 90, 100),
            g("Heartbeat", "b", "Direct Agent", 0, 50),
        ];
        let q = parse(
            "Heartbeat | where TimeGenerated > ago(20m) | summarize count() by Computer, Category",
        )
        .unwrap();
        let t = evaluate(&q, &groups, now, &schema).unwrap();
        // Minutes 81..99 inclusive for a/Direct (19), 90..99 for a/AMA (10); b ended at 50.
        assert_eq!(
            t["rows"],
            json!([["a", "Azure Monitor Agent", 10], ["a", "Direct Agent", 19]])
        );
        assert_eq!(t["columns"][2], json!({"name": "count_", "type": "long"}));
        let q = parse("Heartbeat | where Category == 'Direct Agent' | summarize max(TimeGenerated), dcount(Computer)").unwrap();
        let t = evaluate(&q, &groups, now, &schema).unwrap();
        assert_eq!(t["rows"], json!([[iso(99 * MINUTE_MS), 2]]));
        let q = parse(
            "Heartbeat | where (Computer == 'b' or Category =~ 'azure monitor agent') | count",
        )
        .unwrap();
        assert_eq!(
            evaluate(&q, &groups, now, &schema).unwrap()["rows"],
            json!([[60]])
        );
        let q =
            parse("Heartbeat | summarize n = count() by Computer | where Computer != 'a'").unwrap();
        assert_eq!(
            evaluate(&q, &groups, now, &schema).unwrap()["rows"],
            json!([["b", 50]])
        );
        let q = parse("Heartbeat | where Computer == 'nobody' | summarize count()").unwrap();
        assert_eq!(
            evaluate(&q, &groups, now, &schema).unwrap()["rows"],
            json!([[0]])
        );
        let q = parse("Heartbeat | take 3").unwrap();
        assert_eq!(
            evaluate(&q, &groups, now, &schema).unwrap()["rows"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |n: usize| {
            format!(
                "Heartbeat | where {}Computer == 'a'{}",
                "(".repeat(n),
                ")".repeat(n)
            )
        };
        parse(&nested(MAX_NESTING_DEPTH)).unwrap();
        let at = "Heartbeat | where ".len() + MAX_NESTING_DEPTH;
        assert_eq!(
            parse(&nested(MAX_NESTING_DEPTH + 1)),
            Err(KqlError::TooDeep {
                pos: at,
                limit: MAX_NESTING_DEPTH
            })
        );
        // 3,000 levels overflowed the stack before the limit.
        let e = parse(&nested(3_000)).unwrap_err();
        assert!(e.to_string().contains("nesting depth limit is 64"), "{e}");
        assert!(e.to_string().contains(&format!("position {at}")), "{e}");
    }

    #[test]
    fn unknown_tables_and_columns_are_semantic_errors() {
        let q = parse("Nope | count").unwrap();
        assert!(matches!(
            evaluate(&q, &[], 0, &schema),
            Err(KqlError::Semantic(_))
        ));
        let q = parse("Heartbeat | where Bogus == 'x'").unwrap();
        assert!(matches!(
            evaluate(&q, &[], 0, &schema),
            Err(KqlError::Semantic(_))
        ));
    }
}
