use cloacina_runner::{workflow, Context, TaskError};

#[workflow]
mod looping {
    use super::*;

    #[task(depends_on = [c])]
    async fn a(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(depends_on = [a])]
    async fn b(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(depends_on = [b])]
    async fn c(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

fn main() {}
