//! The recent events a daemon reports through its `status` method.

use std::collections::VecDeque;

/// The last [`EventLog::CAPACITY`] lines a daemon logged, oldest first.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    lines: VecDeque<String>,
}

impl EventLog {
    /// How many lines are kept.
    pub const CAPACITY: usize = 200;

    /// Logs `line` (through `tracing` too) and keeps it, dropping the oldest beyond capacity.
    pub fn push(&mut self, line: String) {
        tracing::info!("{line}");
        if self.lines.len() == Self::CAPACITY {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The newest `n` lines, newest first.
    pub fn newest(&self, n: usize) -> Vec<&str> {
        self.lines
            .iter()
            .rev()
            .take(n)
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_within_capacity() {
        let mut log = EventLog::default();
        for i in 0..EventLog::CAPACITY + 5 {
            log.push(i.to_string());
        }
        assert_eq!(log.newest(2), vec!["204", "203"]);
        assert_eq!(log.newest(usize::MAX).len(), EventLog::CAPACITY);
    }
}
