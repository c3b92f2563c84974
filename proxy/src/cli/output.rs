//! Standard output of the commands that print. A reader that goes away (`| head`) ends them
//! quietly, as it ends any Unix tool; any other failed write (`> /dev/full`) is one error line
//! and the command's error exit code.
//!
//! The commands print with std's `print!` family, which panics when a write fails. Rather than
//! thread a `Result` through every line of every report, the panic is caught here and turned
//! into the answer a shell user expects.

use std::any::Any;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

/// What a closed stdout (EPIPE) does to a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClosedPipe {
    /// SIGPIPE's default action kills the process at the write, as for `cat`: for commands
    /// that hold nothing that must be undone, and write to no socket whose peer may close
    /// (std's `TcpStream::write` sends with MSG_NOSIGNAL).
    Die,
    /// The write fails with EPIPE and the command unwinds first, so what it holds is dropped:
    /// `demo`'s child proxy and temp dir, which SIGPIPE's default action would leave behind,
    /// and its in-process upstream, whose sockets must see EPIPE rather than the signal.
    CleanUpThenDie,
}

/// The prefix of the panic message std's `print!` family raises when the write fails.
const PRINT_FAILED: &str = "failed printing to stdout: ";

/// Runs a command that prints; `error` is its exit code for an error.
pub(crate) fn printing(
    error: u8,
    closed: ClosedPipe,
    command: impl FnOnce() -> ExitCode,
) -> ExitCode {
    if closed == ClosedPipe::Die {
        default_sigpipe();
    }
    // Only this thread's failed prints are taken over; anything else still reports as a panic.
    let this = std::thread::current().id();
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != this || print_failure(info.payload()).is_none() {
            previous(info);
        }
    }));
    let code = match panic::catch_unwind(AssertUnwindSafe(command)) {
        Ok(code) => code,
        Err(payload) => match print_failure(&*payload) {
            Some(why) => return write_failed(&why, error),
            None => panic::resume_unwind(payload),
        },
    };
    // What a `print!` without a final newline left buffered is otherwise flushed at exit,
    // where an error goes unreported.
    match std::io::stdout().flush() {
        Ok(()) => code,
        Err(e) => write_failed(&e.to_string(), error),
    }
}

/// The io error of a failed `print!`, from its panic payload.
fn print_failure(payload: &(dyn Any + Send)) -> Option<String> {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())?;
    message.strip_prefix(PRINT_FAILED).map(str::to_string)
}

fn write_failed(why: &str, error: u8) -> ExitCode {
    if why == std::io::Error::from_raw_os_error(libc::EPIPE).to_string() {
        die_of_sigpipe();
    }
    // stderr may be gone too; there is nowhere left to say so.
    let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {why}");
    ExitCode::from(error)
}

/// Rust starts every program with SIGPIPE ignored; the printing commands want the default.
fn default_sigpipe() {
    // SAFETY: `signal` with SIG_DFL installs no handler; the disposition is process-wide, and
    // `certgate run` (whose sockets rely on EPIPE) never calls this.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Ends the process as SIGPIPE's default action would have, so the shell sees the usual status.
fn die_of_sigpipe() {
    default_sigpipe();
    // SAFETY: raising a signal whose action is the default one. It returns only if SIGPIPE is
    // blocked; the error line the caller then prints is the answer.
    unsafe {
        libc::raise(libc::SIGPIPE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_print_to_stdout_is_taken_over() {
        let failed: Box<dyn Any + Send> = Box::new(format!(
            "{PRINT_FAILED}No space left on device (os error 28)"
        ));
        assert_eq!(
            print_failure(&*failed).as_deref(),
            Some("No space left on device (os error 28)")
        );
        let other: Box<dyn Any + Send> = Box::new("index out of bounds");
        assert_eq!(print_failure(&*other), None);
        let stderr: Box<dyn Any + Send> =
            Box::new("failed printing to stderr: Broken pipe (os error 32)".to_string());
        assert_eq!(print_failure(&*stderr), None);
    }
}
