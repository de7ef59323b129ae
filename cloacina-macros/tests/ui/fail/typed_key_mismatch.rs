use cloacina_runner::{workflow, Context, Key, TaskError};

pub const ROWS: Key<Vec<u32>> = Key::new("rows");

#[workflow]
mod etl {
    use super::*;

    #[task]
    async fn extract(ctx: &mut Context) -> Result<(), TaskError> {
        ctx.set(ROWS, "three rows")?;
        Ok(())
    }

    #[task(depends_on = [extract])]
    async fn load(ctx: &mut Context) -> Result<(), TaskError> {
        let rows: Vec<String> = ctx.get(ROWS)?;
        let _ = rows;
        Ok(())
    }
}

fn main() {}
