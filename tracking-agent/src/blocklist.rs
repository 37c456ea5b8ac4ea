//! Block list files, as `tracking ban sync` reads them.
//!
//! One address or network a line. `#` and `;` start comments, whole-line or trailing; the text of
//! a trailing comment becomes the ban's reason, which is how Spamhaus DROP lists
//! (`1.2.3.0/24 ; SBL123`) carry their ids. Blank lines are skipped.
