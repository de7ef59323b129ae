use cloacina_runner::{workflow, Context, TaskError};

#[workflow]
mod etl {
    use super::*;

    #[task]
    async fn extract(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[cfg(unix)]
    #[task(depends_on = [extract])]
    async fn extra(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

#[workflow]
mod clash {
    use super::*;

    #[task]
    async fn step(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    pub const WORKFLOW_NAME: &str = "mine";
}

fn main() {}
