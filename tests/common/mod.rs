pub mod cli;
pub mod standin;
