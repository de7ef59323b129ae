use cloacina_runner::{workflow, Context, TaskError};

pub struct Db;
pub struct Http;

#[workflow]
mod etl {
    use super::*;

    #[task]
    async fn extract(ctx: &mut Context, db: &Db) -> Result<(), TaskError> {
        let _ = (ctx, db);
        Ok(())
    }

    #[task(depends_on = [extract])]
    async fn load(ctx: &mut Context, http: &Http) -> Result<(), TaskError> {
        let _ = (ctx, http);
        Ok(())
    }
}

fn main() {}
