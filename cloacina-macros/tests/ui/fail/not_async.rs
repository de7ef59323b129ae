use cloacina_runner::{workflow, Context, TaskError};

#[workflow]
mod etl {
    use super::*;

    #[task]
    fn load(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }
}

fn main() {}
