use cloacina_runner::{workflow, Context, TaskError};

#[workflow]
mod etl {
    use super::*;

    #[task(retry = exponential(0, 1s))]
    async fn zero_attempts(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

#[workflow]
mod etl2 {
    use super::*;

    #[task(timeout = 0s)]
    async fn zero_timeout(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

#[workflow]
mod etl3 {
    use super::*;

    #[task(timeout = 30 seconds)]
    async fn bad_duration(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

#[workflow]
mod etl4 {
    use super::*;

    #[task(trigger = one_faild)]
    async fn bad_trigger(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

#[workflow]
mod etl5 {
    use super::*;

    #[task(retries = 3)]
    async fn unknown_argument(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

#[workflow(name = "nightly etl")]
mod etl6 {
    use super::*;

    #[task]
    async fn a(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

#[workflow]
mod empty {}

fn main() {}
