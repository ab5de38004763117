//! Windows event xPath queries (`Channel!XPath`): the Security Events sets of azure-api.md §6,
//! builders that stay within the DCR limit of 20 expressions per query, and a validator for
//! user-written queries.

use super::settings::{EventLevel, SecurityEventSet};

/// "Minimal" Security Events set (39 IDs), in the reference's order.
pub const MINIMAL_EVENT_IDS: [u32; 39] = [
    1102, 4624, 4625, 4657, 4663, 4688, 4700, 4702, 4719, 4720, 4722, 4723, 4724, 4727, 4728, 4732,
    4735, 4737, 4739, 4740, 4754, 4755, 4756, 4767, 4799, 4825, 4946, 4948, 4956, 5024, 5033, 8001,
    8002, 8003, 8004, 8005, 8006, 8007, 8222,
];

/// "Common" Security Events set (143 IDs), in the reference's order (note 4688 before 4670 and
/// 4733 before 4732, as published).
pub const COMMON_EVENT_IDS: [u32; 143] = [
    1, 299, 300, 324, 340, 403, 404, 410, 411, 412, 413, 431, 500, 501, 1100, 1102, 1107, 1108,
    4608, 4610, 4611, 4614, 4622, 4624, 4625, 4634, 4647, 4648, 4649, 4657, 4661, 4662, 4663, 4665,
    4666, 4667, 4688, 4670, 4672, 4673, 4674, 4675, 4689, 4697, 4700, 4702, 4704, 4705, 4716, 4717,
    4718, 4719, 4720, 4722, 4723, 4724, 4725, 4726, 4727, 4728, 4729, 4733, 4732, 4735, 4737, 4738,
    4739, 4740, 4742, 4744, 4745, 4746, 4750, 4751, 4752, 4754, 4755, 4756, 4757, 4760, 4761, 4762,
    4764, 4767, 4768, 4771, 4774, 4778, 4779, 4781, 4793, 4797, 4798, 4799, 4800, 4801, 4802, 4803,
    4825, 4826, 4870, 4886, 4887, 4888, 4893, 4898, 4902, 4904, 4905, 4907, 4931, 4932, 4933, 4946,
    4948, 4956, 4985, 5024, 5033, 5059, 5136, 5137, 5140, 5145, 5632, 6144, 6145, 6272, 6273, 6278,
    6416, 6423, 6424, 8001, 8002, 8003, 8004, 8005, 8006, 8007, 8222, 26401, 30004,
];

pub const SECURITY_CHANNEL: &str = "Security";
pub const APPLOCKER_EXE_DLL_CHANNEL: &str = "Microsoft-Windows-AppLocker/EXE and DLL";
pub const APPLOCKER_MSI_SCRIPT_CHANNEL: &str = "Microsoft-Windows-AppLocker/MSI and Script";
/// AppLocker event IDs and the AppLocker channel that also carries them.
const APPLOCKER_IDS: [(u32, &str); 7] = [
    (8001, APPLOCKER_EXE_DLL_CHANNEL),
    (8002, APPLOCKER_EXE_DLL_CHANNEL),
    (8003, APPLOCKER_EXE_DLL_CHANNEL),
    (8004, APPLOCKER_EXE_DLL_CHANNEL),
    (8005, APPLOCKER_MSI_SCRIPT_CHANNEL),
    (8006, APPLOCKER_MSI_SCRIPT_CHANNEL),
    (8007, APPLOCKER_MSI_SCRIPT_CHANNEL),
];

/// IDs per generated query (Sentinel's chunking; the DCR limit is 20 expressions).
pub const IDS_PER_QUERY: usize = 15;
/// DCR limit of comparison expressions in one xPath query.
pub const MAX_EXPRESSIONS_PER_QUERY: usize = 20;

/// The event IDs of a built-in tier (`None` for All and Custom).
pub fn tier_event_ids(set: SecurityEventSet) -> Option<&'static [u32]> {
    match set {
        SecurityEventSet::Common => Some(&COMMON_EVENT_IDS),
        SecurityEventSet::Minimal => Some(&MINIMAL_EVENT_IDS),
        SecurityEventSet::All | SecurityEventSet::Custom => None,
    }
}

/// xPath queries collecting "All" Security events: the Security and both AppLocker channels.
pub fn all_security_xpaths() -> Vec<String> {
    [
        SECURITY_CHANNEL,
        APPLOCKER_EXE_DLL_CHANNEL,
        APPLOCKER_MSI_SCRIPT_CHANNEL,
    ]
    .iter()
    .map(|c| format!("{c}!*"))
    .collect()
}

/// xPath queries for a list of Security event IDs: `Security!*[System[(EventID=a) or …]]` in
/// chunks of 15 in list order, then the AppLocker IDs again on their AppLocker channels.
pub fn security_event_id_xpaths(ids: &[u32]) -> Vec<String> {
    let mut out = event_id_xpaths(SECURITY_CHANNEL, ids, &[]);
    for channel in [APPLOCKER_EXE_DLL_CHANNEL, APPLOCKER_MSI_SCRIPT_CHANNEL] {
        let on_channel: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| APPLOCKER_IDS.iter().any(|(a, c)| a == id && *c == channel))
            .collect();
        if !on_channel.is_empty() {
            out.extend(event_id_xpaths(channel, &on_channel, &[]));
        }
    }
    out
}

/// xPath queries for one channel filtered by levels and/or event IDs. Without either, the whole
/// channel (`Channel!*`). IDs are chunked so each query keeps within 20 expressions.
pub fn event_id_xpaths(channel: &str, ids: &[u32], levels: &[EventLevel]) -> Vec<String> {
    let level_expr = (!levels.is_empty()).then(|| {
        let parts: Vec<String> = levels
            .iter()
            .map(|l| format!("Level={}", l.level_number()))
            .collect();
        parts.join(" or ")
    });
    if ids.is_empty() {
        return vec![match level_expr {
            Some(l) => format!("{channel}!*[System[({l})]]"),
            None => format!("{channel}!*"),
        }];
    }
    let per_query = IDS_PER_QUERY
        .min(MAX_EXPRESSIONS_PER_QUERY.saturating_sub(levels.len()))
        .max(1);
    ids.chunks(per_query)
        .map(|chunk| {
            let id_expr: Vec<String> = chunk.iter().map(|id| format!("(EventID={id})")).collect();
            let id_expr = id_expr.join(" or ");
            match &level_expr {
                Some(l) => format!("{channel}!*[System[({l}) and ({id_expr})]]"),
                None => format!("{channel}!*[System[{id_expr}]]"),
            }
        })
        .collect()
}

/// The xPath queries of a built-in tier (All, Common, Minimal); `None` for Custom.
pub fn tier_xpaths(set: SecurityEventSet) -> Option<Vec<String>> {
    match set {
        SecurityEventSet::All => Some(all_security_xpaths()),
        SecurityEventSet::Custom => None,
        s => tier_event_ids(s).map(security_event_id_xpaths),
    }
}

/// Split `Channel!XPath`, checking the form AMA accepts: a channel name, `!`, and an XPath 1.0
/// filter (`*` or `*[...]`) with balanced brackets, parentheses and quotes, no functions AMA
/// lacks (`contains`, `starts-with`) and at most 20 comparison expressions. The error says what
/// is wrong.
pub fn validate_xpath(query: &str) -> Result<(&str, &str), String> {
    let Some((channel, path)) = query.split_once('!') else {
        return Err(format!(
            "{query:?} has no '!': write Channel!XPath, e.g. Security!*[System[(EventID=4624)]]"
        ));
    };
    let channel_trimmed = channel.trim();
    if channel_trimmed.is_empty() {
        return Err(format!("{query:?} has no channel name before '!'"));
    }
    if channel != channel_trimmed {
        return Err(format!(
            "{query:?}: the channel name has leading or trailing spaces"
        ));
    }
    let path = path.trim();
    if path.is_empty() {
        return Err(format!(
            "{query:?} has no XPath after '!': use * for the whole channel"
        ));
    }
    if !path.starts_with('*') {
        return Err(format!(
            "{query:?}: the XPath must start with * (e.g. *[System[(EventID=4624)]])"
        ));
    }
    let mut stack = Vec::new();
    let mut quote: Option<char> = None;
    let mut expressions = 0usize;
    let chars: Vec<char> = path.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' | '(' => stack.push(c),
            ']' | ')' => {
                let open = if c == ']' { '[' } else { '(' };
                if stack.pop() != Some(open) {
                    return Err(format!(
                        "{query:?}: unbalanced '{c}' at position {i} of the XPath"
                    ));
                }
            }
            '=' => {
                // `!=`, `<=`, `>=` count once, at their '='.
                expressions += 1;
            }
            '<' | '>' if chars.get(i + 1) != Some(&'=') => expressions += 1,
            _ => {}
        }
    }
    if quote.is_some() {
        return Err(format!(
            "{query:?}: unterminated string literal in the XPath"
        ));
    }
    if let Some(open) = stack.last() {
        return Err(format!("{query:?}: '{open}' is never closed"));
    }
    let lower = path.to_ascii_lowercase();
    for f in ["contains(", "starts-with(", "ends-with(", "substring("] {
        if lower.contains(f) {
            return Err(format!(
                "{query:?}: Windows event XPath does not support {f}); filter on EventID, Level or Provider instead"
            ));
        }
    }
    if expressions > MAX_EXPRESSIONS_PER_QUERY {
        return Err(format!(
            "{query:?} has {expressions} expressions; a DCR allows at most {MAX_EXPRESSIONS_PER_QUERY} per query: split it into several queries"
        ));
    }
    Ok((channel, path))
}

/// The event IDs an xPath query filters on (`EventID=n`), in order of appearance.
pub fn event_ids_in(query: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut rest = query;
    while let Some(pos) = rest.find("EventID") {
        rest = &rest[pos + "EventID".len()..];
        let after = rest.trim_start();
        let Some(after) = after.strip_prefix('=') else {
            continue;
        };
        let digits: String = after
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if let Ok(n) = digits.parse() {
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn reference_sets_have_the_published_sizes_and_no_duplicates() {
        assert_eq!(COMMON_EVENT_IDS.iter().collect::<BTreeSet<_>>().len(), 143);
        assert_eq!(MINIMAL_EVENT_IDS.iter().collect::<BTreeSet<_>>().len(), 39);
        let pos = |id| COMMON_EVENT_IDS.iter().position(|x| *x == id).unwrap();
        assert!(pos(4688) < pos(4670));
        assert!(pos(4733) < pos(4732));
        // Minimal is a subset of Common.
        assert!(
            MINIMAL_EVENT_IDS
                .iter()
                .all(|id| COMMON_EVENT_IDS.contains(id))
        );
    }

    #[test]
    fn minimal_xpaths_are_chunked_by_15_plus_applocker_channels() {
        let q = tier_xpaths(SecurityEventSet::Minimal).unwrap();
        assert_eq!(q.len(), 3 + 2);
        assert!(q[0].starts_with("Security!*[System[(EventID=1102) or (EventID=4624)"));
        assert_eq!(event_ids_in(&q[0]).len(), 15);
        assert_eq!(event_ids_in(&q[2]).len(), 9);
        assert_eq!(
            q[3],
            "Microsoft-Windows-AppLocker/EXE and DLL!*[System[(EventID=8001) or (EventID=8002) or (EventID=8003) or (EventID=8004)]]"
        );
        assert_eq!(
            q[4],
            "Microsoft-Windows-AppLocker/MSI and Script!*[System[(EventID=8005) or (EventID=8006) or (EventID=8007)]]"
        );
        for x in &q {
            validate_xpath(x).unwrap();
        }
    }

    #[test]
    fn levels_and_ids_share_the_expression_budget() {
        let ids: Vec<u32> = (1..=40).collect();
        let levels = [
            EventLevel::Critical,
            EventLevel::Error,
            EventLevel::Warning,
            EventLevel::Information,
            EventLevel::Verbose,
            EventLevel::Error,
        ];
        let q = event_id_xpaths("System", &ids, &levels);
        for x in &q {
            validate_xpath(x).unwrap();
        }
        let all: Vec<u32> = q.iter().flat_map(|x| event_ids_in(x)).collect();
        assert_eq!(all, ids);
        assert_eq!(
            event_id_xpaths("System", &[], &[EventLevel::Error, EventLevel::Warning]),
            ["System!*[System[(Level=2 or Level=3)]]"]
        );
        assert_eq!(
            event_id_xpaths("ForwardedEvents", &[], &[]),
            ["ForwardedEvents!*"]
        );
    }

    #[test]
    fn validator_names_the_problem() {
        assert!(validate_xpath("Security!*[System[(EventID=4624)]]").is_ok());
        assert!(validate_xpath("Microsoft-Windows-AppLocker/EXE and DLL!*").is_ok());
        let bad = [
            ("Security*[System[(EventID=4624)]]", "no '!'"),
            ("!*[System]", "no channel"),
            ("Security!", "no XPath"),
            ("Security!System[(EventID=4624)]", "must start with *"),
            ("Security!*[System[(EventID=4624)]", "never closed"),
            ("Security!*[System[(EventID=4624))]]", "unbalanced"),
            ("Security!*[System[Provider[@Name='x]]]", "unterminated"),
            (
                "Security!*[EventData[contains(Data,'x')]]",
                "does not support",
            ),
        ];
        for (q, want) in bad {
            let e = validate_xpath(q).unwrap_err();
            assert!(e.contains(want), "{q}: {e}");
        }
        let too_many: Vec<String> = (1..=21).map(|i| format!("(EventID={i})")).collect();
        let q = format!("Security!*[System[{}]]", too_many.join(" or "));
        assert!(validate_xpath(&q).unwrap_err().contains("21 expressions"));
    }
}
