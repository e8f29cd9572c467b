import { ParkingError, type ParkedBatch, type ParkingStore } from "../../shared/sinks/parking";

/** Parked pages in memory, for SinkSet tests that need no Blob Storage; `failing` plays a storage outage. */
export class MemoryParking implements ParkingStore {
  readonly blobs = new Map<string, ParkedBatch>();
  failing = false;
  async park(sink: string, tenantId: string, seq: number, batch: ParkedBatch): Promise<void> {
    if (this.failing) throw new ParkingError("Parking a page for a sink failed (HTTP 503)");
    this.blobs.set(`${tenantId}/${sink}/${seq}`, batch);
  }
  async read(sink: string, tenantId: string, seq: number): Promise<ParkedBatch | undefined> {
    return this.blobs.get(`${tenantId}/${sink}/${seq}`);
  }
  async remove(sink: string, tenantId: string, seq: number): Promise<void> {
    this.blobs.delete(`${tenantId}/${sink}/${seq}`);
  }
  async removeAll(): Promise<void> {
    this.blobs.clear();
  }
}
