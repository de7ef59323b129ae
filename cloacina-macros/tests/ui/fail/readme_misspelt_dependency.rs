// The README's first workflow with its dependency misspelt: the README shows this error.
use cloacina_runner::{workflow, Context, DefaultRunner, Key, TaskError};

const ROWS: Key<Vec<i32>> = Key::new("rows");      // typed keys: producer and consumer agree or it does not compile
const LOADED: Key<usize> = Key::new("loaded");

#[workflow]                                         // the DAG is checked when this compiles
mod etl {
    use super::*;

    #[task(retry = exponential(3, 1s))]
    async fn extract(ctx: &mut Context) -> Result<(), TaskError> {
        ctx.set(ROWS, vec![1, 2, 3])?;
        Ok(())
    }

    #[task(depends_on = [extrct], timeout = 30s)]
    async fn load(ctx: &mut Context) -> Result<(), TaskError> {
        let rows = ctx.get(ROWS)?;
        ctx.set(LOADED, rows.len())?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runner = DefaultRunner::new("sqlite://data/app.db").await?;   // or postgres://…
    runner.register_workflow(etl::workflow())?;
    let result = runner.execute("etl", Context::new()).await?;        // waits for a terminal state
    assert_eq!(result.context.get(LOADED)?, 3);
    runner.shutdown().await?;
    Ok(())
}
