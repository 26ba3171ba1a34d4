//! Azure: the Resource Manager client and its client-side throttling. Credentials, the long-running-operation
//! poller and the API Management provider build on these (DESIGN §8).

pub mod arm;
pub mod throttle;

pub use arm::{ArmClient, ArmError, ArmOptions, ArmResponse, TokenSource};
pub use throttle::{Access, BucketLimits, Throttle};
