use cloacina_runner::{workflow, Context, TaskError};

#[workflow]
mod etl {
    use super::*;

    #[task]
    async fn extract(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(depends_on = [extrct])]
    async fn load(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

fn main() {}
