//! A typed key shared by a producer and a consumer.

use cloacina_runner::{Context, Key, TaskError, workflow};

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
pub struct Row {
    pub id: u32,
}

pub const ROWS: Key<Vec<Row>> = Key::new("rows");
pub const COUNT: Key<usize> = Key::new("count");

#[workflow]
mod typed {
    use super::*;

    #[task]
    async fn produce(ctx: &mut Context) -> Result<(), TaskError> {
        ctx.set(ROWS, vec![Row { id: 1 }, Row { id: 2 }])?;
        Ok(())
    }

    #[task(depends_on = [produce])]
    async fn consume(ctx: &mut Context) -> Result<(), TaskError> {
        let rows: Vec<Row> = ctx.get(ROWS)?;
        ctx.set(COUNT, rows.len())?;
        Ok(())
    }
}

fn main() {
    let wf = typed::workflow();
    let mut ctx = Context::new();
    for spec in wf.tasks() {
        let run = cloacina_runner::TaskRun {
            execution_id: cloacina_runner::ExecutionId::new(),
            task_id: spec.id().into(),
            attempt: 1,
            cancellation: cloacina_runner::Cancellation::new(),
        };
        futures::executor::block_on(spec.body().execute(&mut ctx, &run)).unwrap();
    }
    assert_eq!(ctx.get(COUNT).unwrap(), 2);
    assert_eq!(ctx.get(ROWS).unwrap(), [Row { id: 1 }, Row { id: 2 }]);
}
