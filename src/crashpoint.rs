//! Named moments where a test build can be made to die as if killed -9, so
//! the crash tests hit exactly the moments the delivery guarantees are about.
//!
//! Only in debug builds (the tests'), and only when `CERTWATCH_CRASH_AT`
//! names the point: the process then logs it and aborts at once (no
//! destructors, no flush), which is what `kill -9` at that moment would do.
//! A release build ignores the variable.

/// The environment variable naming the crash point.
pub const VAR: &str = "CERTWATCH_CRASH_AT";

/// The environment variable naming a stall point (debug builds): the
/// named part stops for good there, as if wedged (`store`: the store's
/// thread before a flush), so the watchdog can be seen to act.
pub const STALL_VAR: &str = "CERTWATCH_STALL_AT";

/// An alert is committed and flushed, and nothing has been sent yet.
pub const AFTER_COMMIT: &str = "after-commit";
/// A delivery was written to the stream and is not yet marked sent.
pub const AFTER_SEND: &str = "after-send";

/// Dies here if this is the point `CERTWATCH_CRASH_AT` names (debug builds).
pub fn reached(point: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    if std::env::var(VAR).is_ok_and(|v| v == point) {
        eprintln!("certwatch: crash point {point} reached; aborting");
        std::process::abort();
    }
}
