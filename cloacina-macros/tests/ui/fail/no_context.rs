use cloacina_runner::{workflow, TaskError};

#[workflow]
mod etl {
    use super::*;

    #[task]
    async fn load() -> Result<(), TaskError> {
        Ok(())
    }
}

fn main() {}
