use cloacina_runner::{workflow, Context, TaskError};

#[workflow]
mod etl {
    use super::*;

    #[task]
    async fn load(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(id = "load")]
    async fn load_again(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

fn main() {}
