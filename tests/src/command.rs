//! Running the helper programs (`ip`, `nsenter`) and turning their failures into errors that
//! say what was run and what it printed.

use std::{io, process::Command};

/// Runs the command to completion and returns its stdout; a failure carries the command line
/// and its stderr.
pub fn run(command: &mut Command) -> io::Result<String> {
    let output = command
        .output()
        .map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", display(command))))?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{} failed ({}): {}",
            display(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `ip <args>`.
pub fn ip<I, S>(args: I) -> io::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run(Command::new("ip").args(args))
}

/// The command as a shell would show it.
pub fn display(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_command_says_what_was_run_and_what_it_printed() {
        let error = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("sh -c echo oops >&2; exit 3 failed"),
            "{message}"
        );
        assert!(message.ends_with("oops"), "{message}");
    }

    #[test]
    fn a_succeeding_command_returns_its_output() {
        assert_eq!(run(Command::new("echo").arg("hello")).unwrap(), "hello\n");
    }

    #[test]
    fn a_missing_program_is_named_in_the_error() {
        let error = run(&mut Command::new("/nonexistent/program")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().contains("/nonexistent/program"));
    }
}
