use cloacina_runner::{workflow, Context, TaskError};

#[workflow]
mod etl {
    use super::*;

    #[task(id = "load data")]
    async fn load(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

fn main() {}
