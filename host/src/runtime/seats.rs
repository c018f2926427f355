//! Seats: how many instances may be live at once, by who they are for.
//! Services (every environment's instances, and tenants' one-off runs)
//! share the platform's `--max-instances`; the operator's one-off runs
//! have seats of their own that no tenant can take. Every store takes a
//! seat when it is made and gives it back when it is dropped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Who an instance's seat is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seat {
    /// A service's instance, or a tenant's one-off run.
    Service,
    /// The operator's one-off run.
    Operator,
}

/// Live instances by kind of seat, bounded.
pub struct Seats {
    service: (AtomicU32, u32),
    operator: (AtomicU32, u32),
}

/// A seat taken; given back on drop.
pub struct Taken {
    seats: Arc<Seats>,
    seat: Seat,
}

impl Seats {
    /// `services` seats for services, `operator` for the operator's runs.
    pub fn new(services: u32, operator: u32) -> Arc<Seats> {
        Arc::new(Seats {
            service: (AtomicU32::new(0), services),
            operator: (AtomicU32::new(0), operator),
        })
    }

    fn of(&self, seat: Seat) -> &(AtomicU32, u32) {
        match seat {
            Seat::Service => &self.service,
            Seat::Operator => &self.operator,
        }
    }

    /// Takes a seat, or says the platform is full.
    pub fn take(self: &Arc<Self>, seat: Seat) -> Result<Taken, String> {
        let (live, max) = self.of(seat);
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < *max).then_some(n + 1)
        })
        .map_err(|_| match seat {
            Seat::Service => format!(
                "the platform is at its limit of {max} live instances (mesh up --max-instances)"
            ),
            Seat::Operator => format!("the operator already has {max} one-off runs going"),
        })?;
        Ok(Taken {
            seats: self.clone(),
            seat,
        })
    }

    /// Instances live in seats of this kind.
    pub fn live(&self, seat: Seat) -> u32 {
        self.of(seat).0.load(Ordering::Acquire)
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.seats.of(self.seat).0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_cannot_take_the_operators_seats() {
        let seats = Seats::new(2, 1);
        let a = seats.take(Seat::Service).unwrap();
        let _b = seats.take(Seat::Service).unwrap();
        let full = seats.take(Seat::Service).err().unwrap();
        assert!(full.contains("limit of 2 live instances"), "{full}");
        let op = seats.take(Seat::Operator).unwrap();
        assert!(seats.take(Seat::Operator).is_err());
        drop(a);
        assert!(seats.take(Seat::Service).is_ok());
        drop(op);
        assert_eq!(seats.live(Seat::Operator), 0);
    }
}
