//! Listening for SIGTERM and SIGINT.

use std::fmt;
use std::io;

/// The signal that asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceivedSignal {
    /// SIGTERM: what Kubernetes sends when it stops a pod.
    Terminate,
    /// SIGINT (Ctrl+C).
    Interrupt,
}

impl fmt::Display for ReceivedSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        })
    }
}

/// Listens for SIGTERM and SIGINT from the moment it is created, so a signal
/// arriving before [`recv`](Self::recv) is awaited is not lost.
///
/// Creating it replaces the default action of both signals (terminate the
/// process) for the rest of the process's life.
#[derive(Debug)]
pub struct SignalListener {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl SignalListener {
    /// Starts listening. Fails if the signal handlers cannot be installed.
    /// Must be called within a tokio runtime.
    pub fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> io::Result<ReceivedSignal> {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.terminate.recv() => Ok(ReceivedSignal::Terminate),
                Some(()) = self.interrupt.recv() => Ok(ReceivedSignal::Interrupt),
                else => Err(io::Error::other("signal streams closed")),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await?;
            Ok(ReceivedSignal::Interrupt)
        }
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl+C on non-Unix platforms).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let signal = agent_patterns_shutdown::wait_for_signal().await?;
/// println!("stopping on {signal}");
/// # Ok(())
/// # }
/// ```
pub async fn wait_for_signal() -> io::Result<ReceivedSignal> {
    SignalListener::new()?.recv().await
}
