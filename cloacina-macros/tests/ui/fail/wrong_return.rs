use cloacina_runner::{workflow, Context, TaskError};

#[workflow]
mod etl {
    use super::*;

    #[task]
    async fn load(ctx: &mut Context) -> Result<Context, TaskError> {
        Ok(ctx.clone())
    }
}

fn main() {}
