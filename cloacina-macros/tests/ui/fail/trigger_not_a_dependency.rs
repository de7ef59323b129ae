use cloacina_runner::{workflow, Context, TaskError};

#[workflow]
mod etl {
    use super::*;

    #[task]
    async fn extract(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task]
    async fn check(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(depends_on = [extract], trigger = task_failed(check))]
    async fn alert(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

fn main() {}
