//! What a client statement may do: the authorizer that refuses what cannot be replicated, plus
//! the few checks the authorizer cannot make (VACUUM, `'localtime'`).
//!
//! The authorizer runs while SQLite prepares a statement, so it sees through views and triggers
//! and cannot be fooled by comments or quoting. It polices only client statements: paxsql's own
//! statements (SAVEPOINT, meta updates) run with policing switched off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

use super::meta::PAXSQL_TABLE_PREFIX;

/// Pragmas a client may read (no value) anywhere.
const PRAGMAS_READABLE: &[&str] = &[
    "application_id",
    "user_version",
    "schema_version",
    "data_version",
    "foreign_keys",
    "recursive_triggers",
    "defer_foreign_keys",
    "journal_mode",
    "synchronous",
    "page_size",
    "page_count",
    "freelist_count",
    "encoding",
    "auto_vacuum",
    "trusted_schema",
    "table_list",
    "database_list",
    "collation_list",
    "function_list",
    "module_list",
    "pragma_list",
    "compile_options",
    "integrity_check",
    "quick_check",
    "foreign_key_check",
];

/// Pragmas that take a table or index name as their argument and only read.
const PRAGMAS_WITH_NAME_ARGUMENT: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// Pragmas stored in the database file: setting them replicates like any write.
const PRAGMAS_STORED_IN_FILE: &[&str] = &["user_version", "application_id"];

/// Pragmas that describe this node's file (its pages, its path, its connection's view), not
/// the replicated data: equal data may answer differently on two replicas.
const PRAGMAS_OF_THIS_FILE: &[&str] = &[
    "page_count",
    "freelist_count",
    "data_version",
    "database_list",
];

/// Virtual tables that describe this node's file page by page.
const TABLES_OF_THIS_FILE: &[&str] = &["dbstat"];

/// Functions whose result depends on this connection's history, not on the replicated state.
const FUNCTIONS_NOT_REPLICABLE_IN_WRITES: &[&str] = &["changes", "total_changes"];

/// Shared between a connection's authorizer and the code that prepares statements.
#[derive(Debug, Default)]
pub struct Policy {
    /// True while a client statement is being prepared or stepped.
    policing: AtomicBool,
    /// True on the writer: stricter rules for functions whose result is connection-local.
    writer: bool,
    /// On the writer: true only inside a batch or an apply. Outside them a client statement
    /// may read but never write (the writer's guard; `PRAGMA query_only` would do the same,
    /// but switching it expires every prepared statement of the connection, twice per value).
    /// Checked when a statement is prepared, so the writer takes client statements from its
    /// statement cache only while writes are open. Outside a transaction even read-only
    /// pragmas are refused on the writer (nothing runs client SQL there outside a batch or an
    /// apply).
    writes_open: AtomicBool,
    /// On the writer: true only while it runs a client's SAVEPOINT, RELEASE or ROLLBACK TO
    /// inside an interactive transaction, or replays one. In a batch of autocommit statements
    /// from many clients they would undo or release other clients' statements.
    savepoints_open: AtomicBool,
    /// Why the last refused statement was refused (the authorizer can only say "denied").
    refusal: Mutex<Option<String>>,
}

impl Policy {
    pub fn new(writer: bool) -> Arc<Policy> {
        Arc::new(Policy {
            writer,
            ..Policy::default()
        })
    }

    /// Polices client statements until the guard drops.
    pub fn police(self: &Arc<Self>) -> PolicingGuard {
        self.refusal.lock().expect("refusal lock").take();
        self.policing.store(true, Ordering::SeqCst);
        PolicingGuard {
            policy: Arc::clone(self),
        }
    }

    /// Lets client savepoint statements through until the guard drops (see
    /// `savepoints_open`).
    pub fn open_savepoints(self: &Arc<Self>) -> SavepointsGuard {
        self.savepoints_open.store(true, Ordering::SeqCst);
        SavepointsGuard {
            policy: Arc::clone(self),
        }
    }

    /// Opens or closes the writer for client writes (see `writes_open`).
    pub fn set_writes_open(&self, open: bool) {
        self.writes_open.store(open, Ordering::SeqCst);
    }

    /// Whether a client statement compiled earlier on this connection may run again without
    /// being compiled (and judged) anew: always on a reader; on the writer only while writes are
    /// open, the only state in which it compiles (and so caches) client statements that write.
    pub fn judgement_reusable(&self) -> bool {
        !self.writer || self.writes_open.load(Ordering::SeqCst)
    }

    /// The reason of the last refusal, if the last failure was one.
    pub fn take_refusal(&self) -> Option<String> {
        self.refusal.lock().expect("refusal lock").take()
    }

    fn decide(&self, context: AuthContext<'_>) -> Authorization {
        if !self.policing.load(Ordering::SeqCst) {
            return Authorization::Allow;
        }
        if self.writer
            && !self.writes_open.load(Ordering::SeqCst)
            && !is_read_action(&context.action)
        {
            *self.refusal.lock().expect("refusal lock") = Some(
                "the writer takes writes only inside a replicated transaction; this statement \
                 was not run (a paxsql bug: please report it)"
                    .into(),
            );
            return Authorization::Deny;
        }
        if matches!(context.action, AuthAction::Savepoint { .. })
            && self.savepoints_open.load(Ordering::SeqCst)
        {
            return Authorization::Allow;
        }
        match refusal_reason(self.writer, &context.action) {
            None => Authorization::Allow,
            Some(reason) => {
                *self.refusal.lock().expect("refusal lock") = Some(reason);
                Authorization::Deny
            }
        }
    }
}

pub struct PolicingGuard {
    policy: Arc<Policy>,
}

impl Drop for PolicingGuard {
    fn drop(&mut self) {
        self.policy.policing.store(false, Ordering::SeqCst);
    }
}

pub struct SavepointsGuard {
    policy: Arc<Policy>,
}

impl Drop for SavepointsGuard {
    fn drop(&mut self) {
        self.policy.savepoints_open.store(false, Ordering::SeqCst);
    }
}

/// Whether `sql` is a client's savepoint statement (`SAVEPOINT`, `RELEASE`, `ROLLBACK TO`): it
/// runs outside the per-statement savepoint that wraps every other client statement, since
/// releasing that wrapper would release the client's savepoint with it. Decides only that; the
/// authorizer still judges the statement (a plain `ROLLBACK` is refused, with no effect).
pub fn is_savepoint_control(sql: &str) -> bool {
    // Every replayed statement asks: the first word, without the allocations of `verb`.
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, next)| next);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, next)| next);
        } else {
            break;
        }
    }
    let word_end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let word = &rest[..word_end];
    ["SAVEPOINT", "RELEASE", "ROLLBACK"]
        .iter()
        .any(|keyword| word.eq_ignore_ascii_case(keyword))
}

/// Installs `policy` as the authorizer of `connection`.
pub fn install(connection: &mut Connection, policy: &Arc<Policy>) -> rusqlite::Result<()> {
    let policy = Arc::clone(policy);
    connection.authorizer(Some(move |context: AuthContext<'_>| policy.decide(context)))
}

/// Actions that only read: all a client statement may do on the writer outside a transaction.
fn is_read_action(action: &AuthAction<'_>) -> bool {
    matches!(
        action,
        AuthAction::Read { .. }
            | AuthAction::Select
            | AuthAction::Function { .. }
            | AuthAction::Recursive
    )
}

fn refusal_reason(writer: bool, action: &AuthAction<'_>) -> Option<String> {
    use AuthAction::*;
    if let Some(name) = reserved_name_changed(action) {
        return Some(format!(
            "{name} is paxsql's own bookkeeping (names starting with {PAXSQL_TABLE_PREFIX} are \
             reserved): it may be read, never changed; use another name for your objects"
        ));
    }
    let temp = "TEMP tables, views, triggers and indexes live on one node only and cannot be \
                replicated; create a regular object instead";
    match action {
        Attach { .. } | Detach { .. } => Some(
            "ATTACH and DETACH are node-local and cannot be replicated; use one database (group) per \
             database name instead"
                .into(),
        ),
        CreateTempTable { .. } | CreateTempIndex { .. } | CreateTempTrigger { .. } | CreateTempView { .. } => {
            Some(temp.into())
        }
        Transaction { .. } => Some(
            "transaction control (BEGIN, COMMIT, ROLLBACK) is handled by the paxsql session, not \
             inside a replicated statement; send it as its own statement"
                .into(),
        ),
        Savepoint { .. } => Some(
            "SAVEPOINT, RELEASE and ROLLBACK TO work only inside BEGIN … COMMIT, each as its own \
             statement"
                .into(),
        ),
        Pragma { pragma_name, .. } if writer && is_one_of(pragma_name, PRAGMAS_OF_THIS_FILE) => {
            Some(file_local(&format!("PRAGMA {pragma_name}")))
        }
        Read { table_name, .. } if writer && is_one_of(table_name, TABLES_OF_THIS_FILE) => {
            Some(file_local(table_name))
        }
        Pragma { pragma_name, pragma_value } => pragma_refusal(pragma_name, *pragma_value),
        Function { function_name } => function_refusal(writer, function_name),
        CreateVtable { module_name, .. } => Some(format!(
            "virtual tables (module {module_name}) are not replicated by paxsql; use a regular table"
        )),
        _ => None,
    }
}

fn is_one_of(name: &str, names: &[&str]) -> bool {
    names.iter().any(|known| known.eq_ignore_ascii_case(name))
}

/// Why a statement on the writer may not read what describes this node's file: a write that
/// copied it would make replicas diverge without any effect check noticing.
fn file_local(what: &str) -> String {
    format!(
        "{what} describes this node's database file, not the replicated data, and is refused in \
         writes and transactions (replicas would store different values); read it in a \
         statement of its own, outside BEGIN"
    )
}

/// The reserved name an action would change or create, if any. Reads stay allowed.
fn reserved_name_changed<'a>(action: &AuthAction<'a>) -> Option<&'a str> {
    use AuthAction::*;
    let names: &[&'a str] = match action {
        Insert { table_name }
        | Update { table_name, .. }
        | Delete { table_name }
        | CreateTable { table_name }
        | DropTable { table_name }
        | AlterTable { table_name, .. } => &[*table_name],
        CreateIndex {
            index_name,
            table_name,
        }
        | DropIndex {
            index_name,
            table_name,
        } => &[*index_name, *table_name],
        CreateTrigger {
            trigger_name,
            table_name,
        }
        | DropTrigger {
            trigger_name,
            table_name,
        } => &[*trigger_name, *table_name],
        CreateView { view_name } | DropView { view_name } => &[*view_name],
        CreateVtable { table_name, .. } | DropVtable { table_name, .. } => &[*table_name],
        _ => &[],
    };
    names.iter().copied().find(|name| {
        name.get(..PAXSQL_TABLE_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(PAXSQL_TABLE_PREFIX))
    })
}

fn pragma_refusal(name: &str, value: Option<&str>) -> Option<String> {
    let name = name.to_ascii_lowercase();
    let allowed = match value {
        None => PRAGMAS_READABLE.contains(&name.as_str()),
        Some(_) => {
            PRAGMAS_WITH_NAME_ARGUMENT.contains(&name.as_str())
                || PRAGMAS_STORED_IN_FILE.contains(&name.as_str())
        }
    };
    if allowed {
        return None;
    }
    Some(match value {
        Some(_) => format!(
            "PRAGMA {name} = … is refused: connection settings are fixed by the paxsql configuration \
             and would not replicate; only user_version and application_id may be set"
        ),
        None => format!("PRAGMA {name} is refused: it changes node-local state that paxsql cannot replicate"),
    })
}

fn function_refusal(writer: bool, name: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    if name == "load_extension" {
        return Some(
            "load_extension() is refused: extensions are node-local and would make replicas diverge".into(),
        );
    }
    if writer && FUNCTIONS_NOT_REPLICABLE_IN_WRITES.contains(&name.as_str()) {
        return Some(format!(
            "{name}() is refused in writes: its value depends on this connection's history, which \
             replicas do not share; read the count from the command tag instead"
        ));
    }
    None
}

/// Checks that the authorizer cannot make: VACUUM (no authorizer action) and the `'localtime'`
/// and `'utc'` date modifiers (string arguments). Scans the SQL text and the parameters.
pub fn text_refusal(sql: &str, text_params: &[&str]) -> Option<String> {
    let first_word = Scanner::new(sql).next_token();
    if matches!(first_word, Some(Token::Word(ref word)) if word.eq_ignore_ascii_case("VACUUM")) {
        return Some(
            "VACUUM is refused: it renumbers rowids on one node only and would make replicas diverge"
                .into(),
        );
    }
    // The authorizer names neither the new table of `ALTER TABLE … RENAME TO` nor the parent
    // of a foreign key (`REFERENCES _paxsql_meta` would make paxsql's own meta UPDATE fail to
    // prepare on every node: the group would stop for good). So any CREATE or ALTER that
    // mentions the prefix is refused here; an identifier has no escapes, so the name of such
    // a table always appears literally.
    if matches!(first_word, Some(Token::Word(ref word))
            if word.eq_ignore_ascii_case("ALTER") || word.eq_ignore_ascii_case("CREATE"))
        && contains_ignore_ascii_case(sql, PAXSQL_TABLE_PREFIX)
    {
        return Some(format!(
            "names starting with {PAXSQL_TABLE_PREFIX} are reserved for paxsql's own bookkeeping; \
             use another name for your objects"
        ));
    }
    let names_local_time = |text: &str| {
        let lower = text.to_ascii_lowercase();
        lower == "localtime" || lower == "utc"
    };
    // A literal equal to 'localtime' or 'utc' appears verbatim in the text (neither word holds
    // a quote to escape), so text without either word needs no scan: most writes skip it.
    if mentions_local_time_word(sql)
        && string_literals(sql)
            .iter()
            .any(|literal| names_local_time(literal))
        || text_params.iter().any(|param| names_local_time(param))
    {
        return Some(
            "the 'localtime' and 'utc' date modifiers are refused: replicas may run in other time \
             zones; paxsql stores and computes times in UTC, convert to local time in the client"
                .into(),
        );
    }
    None
}

/// Whether `text` contains `localtime` or `utc` in any ASCII case (this runs for every
/// statement on every node).
fn mentions_local_time_word(text: &str) -> bool {
    contains_ignore_ascii_case(text, "localtime") || contains_ignore_ascii_case(text, "utc")
}

/// Whether `text` contains `needle` in any ASCII case, without allocating.
pub fn contains_ignore_ascii_case(text: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || text
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

/// The contents of the single-quoted string literals of `sql` (comments skipped).
fn string_literals(sql: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut scanner = Scanner::new(sql);
    while let Some(token) = scanner.next_token() {
        if let Token::String(text) = token {
            literals.push(text);
        }
    }
    literals
}

/// The command-tag verb of a statement: `INSERT`, `CREATE TABLE`, `SELECT`… For `WITH …` it
/// is the verb of the first top-level SELECT/INSERT/UPDATE/DELETE/REPLACE after the CTEs.
pub fn verb(sql: &str) -> String {
    let mut scanner = Scanner::new(sql);
    let mut depth = 0usize;
    let mut first: Option<String> = None;
    let mut words: Vec<String> = Vec::new();
    while let Some(token) = scanner.next_token() {
        match token {
            Token::Open => depth += 1,
            Token::Close => depth = depth.saturating_sub(1),
            Token::Word(word) if depth == 0 => {
                let word = word.to_ascii_uppercase();
                if first.is_none() {
                    // Only CREATE, DROP and WITH need the words after the first: stop scanning
                    // an INSERT at its first word (this runs for every statement on every node).
                    if !["CREATE", "DROP", "WITH"].contains(&word.as_str()) {
                        return verb_from_words(&[word]);
                    }
                    first = Some(word.clone());
                }
                if first.as_deref() == Some("WITH") {
                    if ["SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "VALUES"]
                        .contains(&word.as_str())
                    {
                        return word;
                    }
                    continue;
                }
                words.push(word);
                if words.len() == 5 {
                    break;
                }
            }
            _ => {}
        }
    }
    verb_from_words(&words)
}

fn verb_from_words(words: &[String]) -> String {
    let Some(first) = words.first() else {
        return String::new();
    };
    match first.as_str() {
        "CREATE" | "DROP" => {
            let object = words[1..]
                .iter()
                .find(|word| !["UNIQUE", "TEMP", "TEMPORARY", "VIRTUAL"].contains(&word.as_str()));
            match object {
                Some(object) => format!("{first} {object}"),
                None => first.clone(),
            }
        }
        "ALTER" => "ALTER TABLE".into(),
        other => other.to_string(),
    }
}

enum Token {
    Word(String),
    String(String),
    Open,
    Close,
    Other,
}

/// A minimal SQL tokenizer: words, single-quoted strings, parentheses; skips comments and
/// quoted identifiers. Enough for verbs and literal checks, not a parser.
struct Scanner<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl<'a> Scanner<'a> {
    fn new(sql: &'a str) -> Self {
        Scanner {
            chars: sql.chars().peekable(),
        }
    }

    fn next_token(&mut self) -> Option<Token> {
        loop {
            let current = self.chars.next()?;
            match current {
                c if c.is_whitespace() => continue,
                '-' if self.chars.peek() == Some(&'-') => self.skip_line(),
                '/' if self.chars.peek() == Some(&'*') => self.skip_block(),
                '\'' => return Some(Token::String(self.quoted('\''))),
                '"' | '`' => {
                    self.quoted(current);
                    return Some(Token::Other);
                }
                '[' => {
                    self.quoted(']');
                    return Some(Token::Other);
                }
                '(' => return Some(Token::Open),
                ')' => return Some(Token::Close),
                c if c.is_alphabetic() || c == '_' => return Some(Token::Word(self.word(c))),
                _ => return Some(Token::Other),
            }
        }
    }

    fn skip_line(&mut self) {
        for c in self.chars.by_ref() {
            if c == '\n' {
                break;
            }
        }
    }

    fn skip_block(&mut self) {
        self.chars.next();
        let mut previous = ' ';
        for c in self.chars.by_ref() {
            if previous == '*' && c == '/' {
                break;
            }
            previous = c;
        }
    }

    /// Reads up to the closing `quote` (a doubled quote is an escaped quote).
    fn quoted(&mut self, quote: char) -> String {
        let mut text = String::new();
        while let Some(c) = self.chars.next() {
            if c == quote {
                if self.chars.peek() == Some(&quote) && quote != ']' {
                    self.chars.next();
                    text.push(c);
                    continue;
                }
                break;
            }
            text.push(c);
        }
        text
    }

    fn word(&mut self, first: char) -> String {
        let mut word = String::from(first);
        while let Some(&c) = self.chars.peek() {
            if c.is_alphanumeric() || c == '_' || c == '$' {
                word.push(c);
                self.chars.next();
            } else {
                break;
            }
        }
        word
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_name_the_command() {
        assert_eq!(verb("insert into t values (1)"), "INSERT");
        assert_eq!(
            verb("/* x */ CREATE UNIQUE INDEX i ON t(a)"),
            "CREATE INDEX"
        );
        assert_eq!(verb("create table if not exists t(a)"), "CREATE TABLE");
        assert_eq!(
            verb("WITH x(a) AS (SELECT 1) DELETE FROM t WHERE a IN x"),
            "DELETE"
        );
        assert_eq!(verb("-- c\nselect 1"), "SELECT");
        assert_eq!(verb("alter table t add column b"), "ALTER TABLE");
        assert_eq!(verb("drop table t"), "DROP TABLE");
        assert_eq!(verb("replace into t values ('CREATE')"), "REPLACE");
    }

    #[test]
    fn savepoint_statements_are_told_by_their_first_word() {
        for sql in [
            "SAVEPOINT a",
            "savepoint a",
            "  release a",
            "RELEASE SAVEPOINT a",
            "ROLLBACK TO a",
            "rollback transaction to savepoint a",
            "/* app */ ROLLBACK TO a",
            "-- app\n\tRELEASE a",
        ] {
            assert!(is_savepoint_control(sql), "{sql}");
        }
        for sql in [
            "SAVEPOINTS",
            "INSERT INTO savepoint VALUES (1)",
            "SELECT 'ROLLBACK'",
            "/* ROLLBACK */ DELETE FROM t",
            "-- RELEASE\nUPDATE t SET a = 1",
            "/* unterminated",
            "",
        ] {
            assert!(!is_savepoint_control(sql), "{sql}");
        }
    }

    #[test]
    fn localtime_is_found_in_literals_and_params_but_not_in_comments() {
        assert!(text_refusal("SELECT datetime('now', 'LocalTime')", &[]).is_some());
        assert!(text_refusal("SELECT datetime('now', ?)", &["utc"]).is_some());
        assert!(text_refusal("SELECT 1 -- 'localtime'", &[]).is_none());
        assert!(text_refusal("SELECT 'it''s localtime'", &[]).is_none());
        assert!(text_refusal("  vacuum", &[]).is_some());
        // The quick pre-check must not hide a literal in any case.
        assert!(text_refusal("INSERT INTO t VALUES (datetime('now', 'UTC'))", &[]).is_some());
        assert!(text_refusal("INSERT INTO t VALUES ('utc-ish')", &[]).is_none());
        assert!(text_refusal("INSERT INTO t VALUES ('x')", &[]).is_none());
    }
}
