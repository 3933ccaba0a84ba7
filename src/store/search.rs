//! Message search (README "Search"): whole words and prefixes of words, case-insensitive,
//! over the caller's rooms, through the index [`super::search_index`] keeps (migration V7).

use tokio_postgres::types::Type;

use super::messages::{history_from_row, HistoryMessage, HISTORY_COLUMNS};
use super::Store;
use crate::error::StoreError;

/// Words this short match whole words only (README "Search"): as prefixes they would match
/// a large share of all words and say little.
const PREFIX_MIN_CHARS: usize = 3;

/// A search request, checked by the REST layer.
#[derive(Debug, Clone)]
pub struct Search<'a> {
    /// The words to find.
    pub q: &'a str,
    /// Only this room (else every room of the caller).
    pub room_id: Option<i64>,
    /// Only messages with a lower id.
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: i64,
    /// Whose rooms are searched (and whose reactions `me` shows).
    pub caller: i64,
}

/// Lexemes of the query, cut by the same parser and dictionary as the index, so a query word
/// splits exactly as the stored text did (an e-mail address or `v2.3` stays one lexeme).
const LEXEMES_SQL: &str = "SELECT lexeme FROM unnest(to_tsvector('simple', $1))";

/// Newest first among the matches in the caller's rooms, the membership checked in the same
/// statement. The query arrives as a value (not built in SQL), so PostgreSQL plans it knowing
/// how common its words are: the index for rare words, the newest documents backwards for
/// common ones. The words of the current text are checked again on the few rows returned, so
/// an edit the indexer has not reached yet never matches its old text; a message the indexer
/// has not reached yet is not found (README "Search": at most `search.index_delay_ms` behind).
const SEARCH_SQL_TEMPLATE: &str = "SELECT {cols} FROM search_docs d \
       JOIN messages m ON m.id = d.message_id JOIN users u ON u.id = m.sender_id \
     WHERE d.tsv @@ $1::tsquery AND d.message_id < $2 \
       AND m.room_id IN (SELECT rm.room_id FROM room_members rm WHERE rm.user_id = $4 AND ($5 = 0 OR rm.room_id = $5)) \
       AND NOT m.deleted AND to_tsvector('simple', m.content) @@ $1::tsquery \
     ORDER BY d.message_id DESC LIMIT $3";

/// The tsquery that matches every lexeme as a whole word or, from [`PREFIX_MIN_CHARS`] on,
/// as a prefix; `None` when there is no word.
pub fn tsquery(lexemes: &[String]) -> Option<String> {
    let terms: Vec<String> = lexemes
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            // A quoted tsquery literal: quotes doubled, backslashes escaped.
            let quoted = format!("'{}'", l.replace('\\', "\\\\").replace('\'', "''"));
            if l.chars().count() >= PREFIX_MIN_CHARS {
                quoted + ":*"
            } else {
                quoted
            }
        })
        .collect();
    (!terms.is_empty()).then(|| terms.join(" & "))
}

impl Store {
    /// The lexemes of a query text (empty when it has no words).
    pub async fn search_lexemes(&self, q: &str) -> Result<Vec<String>, StoreError> {
        let c = self.conn().await?;
        let rows = c.query_typed(LEXEMES_SQL, &[(&q, Type::TEXT)]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Messages matching every word of `search.q`; an empty page when it has no words.
    pub async fn search(&self, search: Search<'_>) -> Result<Vec<HistoryMessage>, StoreError> {
        let Some(query) = tsquery(&self.search_lexemes(search.q).await?) else {
            return Ok(Vec::new());
        };
        let sql = SEARCH_SQL_TEMPLATE.replace("{cols}", HISTORY_COLUMNS);
        let before = search.before_id.unwrap_or(i64::MAX);
        let room = search.room_id.unwrap_or(0);
        let c = self.conn().await?;
        let rows = c
            .query_typed(
                &sql,
                &[
                    (&query, Type::TEXT),
                    (&before, Type::INT8),
                    (&search.limit, Type::INT8),
                    (&search.caller, Type::INT8),
                    (&room, Type::INT8),
                ],
            )
            .await?;
        Ok(rows.iter().map(history_from_row).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::tsquery;

    fn lex(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn short_words_whole_longer_ones_prefixes() {
        assert_eq!(tsquery(&lex(&["go", "deploy"])).as_deref(), Some("'go' & 'deploy':*"));
        assert_eq!(tsquery(&lex(&["ann"])).as_deref(), Some("'ann':*"));
        assert_eq!(tsquery(&lex(&["é"])).as_deref(), Some("'é'"));
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(tsquery(&lex(&["it's"])).as_deref(), Some("'it''s':*"));
        assert_eq!(tsquery(&lex(&["a\\b"])).as_deref(), Some("'a\\\\b':*"));
    }

    #[test]
    fn no_words_no_query() {
        assert_eq!(tsquery(&[]), None);
        assert_eq!(tsquery(&lex(&[""])), None);
    }
}
