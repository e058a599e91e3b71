//! The replicas already tried for one request, so a retry goes elsewhere
//! (Envoy #27317), kept inline for any sensible `--retries`.

/// Replicas already tried for one request, without a heap allocation for
/// any sensible `--retries`.
pub(super) struct Tried {
    inline: [usize; 8],
    len: usize,
    spill: Vec<usize>,
}

impl Tried {
    pub(super) fn new(attempts: usize) -> Self {
        let spill = if attempts > 8 {
            Vec::with_capacity(attempts)
        } else {
            Vec::new()
        };
        Self {
            inline: [0; 8],
            len: 0,
            spill,
        }
    }

    pub(super) fn push(&mut self, index: usize) {
        if self.spill.capacity() > 0 {
            self.spill.push(index);
        } else if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = index;
            self.len += 1;
        }
    }

    pub(super) fn as_slice(&self) -> &[usize] {
        if self.spill.capacity() > 0 {
            &self.spill
        } else {
            &self.inline[..self.len]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_holds_every_attempt_inline_or_spilled() {
        for attempts in [1, 3, 8, 9, 20] {
            let mut t = Tried::new(attempts);
            for i in 0..attempts {
                t.push(i * 2);
            }
            assert_eq!(
                t.as_slice(),
                (0..attempts).map(|i| i * 2).collect::<Vec<_>>(),
                "{attempts}"
            );
        }
    }
}
